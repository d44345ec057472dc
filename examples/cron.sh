#!/bin/sh
# Nightly report from cron, e.g. in `crontab -e`:
#   15 3 * * * /usr/local/bin/nightly-report.sh
#
# The profile `reports` lives in ~/.config/envoi/config.toml (see config.example.toml);
# its password comes from password_command or password_env, never from this script.
# Exit codes (see the README): 75 means "try again later", anything else non-zero means
# the input or the configuration needs fixing.
set -u

report=/var/log/backup/last-run.log

envoi send --profile reports \
  --to "ops@example.com" \
  --subject "Backup report $(date +%F)" \
  --body-file "$report" \
  --attach "$report" \
  --importance "$(grep -q FAILED "$report" && echo high || echo normal)"
status=$?

case $status in
  0) ;;
  75) # Temporary: the relay is down or busy. Try once more in ten minutes.
      sleep 600
      envoi send --profile reports --to ops@example.com \
        --subject "Backup report $(date +%F) (retry)" --body-file "$report" --attach "$report"
      status=$? ;;
  *) logger -t nightly-report "envoi failed with exit code $status" ;;
esac
exit $status
