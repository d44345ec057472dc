#!/usr/bin/env python3
"""Runs a composite action's steps as a GitHub Actions runner does, for tests/it/action.rs.

    action_runner.py JOB.json  ->  one JSON object on stdout
    action_runner.py --check-uses ACTION_DIR FILE...  ->  exit 0, or 1 with the faults

`--check-uses`: in each FILE (a workflow, or a YAML list of steps, as a guide shows), every
step that `uses:` envoi's action (`*/envoi@REF`, or `./`) gives only inputs that action.yml
declares, and at least one step does.

JOB.json: {"action_dir": the folder holding action.yml (GITHUB_ACTION_PATH),
"with": the step's inputs, "step_id": the calling step's id (github.action),
"github": more of the `github` context (run_id, job, run_attempt),
"env": the job's environment (PATH, HOME, ...), "workspace": GITHUB_WORKSPACE and the
working directory, "runner_temp": RUNNER_TEMP}.

What the runner does, and this does too:
- `inputs`: `with:` values (strings); a missing input takes its `default:`, which may use
  `${{ github.* }}`. Composite actions get no INPUT_* variables from the runner (only
  JavaScript and container actions do): the action must map them in `env:` itself.
- `${{ }}` is resolved in input defaults, step `env:` and the action's `outputs`, with
  only the forms envoi's action.yml uses: `inputs.X`, `github.X`, `steps.ID.outputs.X`,
  `env.X`. Any other expression, any `${{` in `run:` (script injection), an `if:`, a
  `uses:` step, a shell other than bash, or an unknown key is refused: a harness that
  guessed would let action.yml drift from what GitHub runs.
- Each `run:` is written to a file in RUNNER_TEMP and run as `shell: bash` is:
  `bash --noprofile --norc -eo pipefail FILE`, in the workspace, with the job's
  environment, the GITHUB_* / RUNNER_* variables and the step's `env:`.
- Each step gets fresh GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH and GITHUB_STEP_SUMMARY
  files; after it, `name=value` and `name<<DELIM` lines of GITHUB_OUTPUT become
  `steps.ID.outputs`, those of GITHUB_ENV the environment of later steps, and each line of
  GITHUB_PATH is put in front of PATH for later steps.
- A step that exits non-zero fails the action; the steps after it are skipped.
- Workflow commands (a line `::name key=value,key=value::DATA`, read as the runner's
  ActionCommand.TryParseV2 reads it: leading spaces dropped, DATA un-escaped `%0D` `%0A`
  `%25`, property values `%0D` `%0A` `%3A` `%2C` `%25`, in that order):
  `::add-mask::VALUE` hides the un-escaped VALUE from the log that follows (`masked_log`;
  `raw_log` keeps everything, so a test can prove a secret appeared nowhere but in its
  mask command); `::error ...::MESSAGE` is an annotation. Every command seen is listed in
  `commands`, so a test can prove an input started none of its own.

Output: {"conclusion": "success"|"failure", "outputs": {...}, "steps": [{"id", "exit_code",
"outputs"}], "annotations": [{"level", "message", "properties"}], "commands": [{"command",
"properties", "data"}], "masks": [...], "raw_log", "masked_log", "path_added": [...]}.
"""

import json
import os
import re
import subprocess
import sys
import uuid

import yaml

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
FORMS = [
    re.compile(rf"^inputs\.({NAME})$"),
    re.compile(rf"^github\.({NAME})$"),
    re.compile(rf"^steps\.({NAME})\.outputs\.({NAME})$"),
    re.compile(rf"^env\.({NAME})$"),
]
STEP_KEYS = {"name", "id", "shell", "env", "run"}
STEP_TIMEOUT = 120


# The runner's un-escaping (actions/runner ActionCommand.cs), applied in this order.
DATA_ESCAPES = [("%0D", "\r"), ("%0A", "\n"), ("%25", "%")]
PROPERTY_ESCAPES = [("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")]


def unescape(text, table):
    for escaped, token in table:
        text = text.replace(escaped, token)
    return text


def parse_command(line):
    """A workflow command line as {"command", "properties", "data"}, or None."""
    text = line.lstrip(" ")
    if not text.startswith("::"):
        return None
    end = text.find("::", 2)
    if end < 0:
        return None
    info = text[2:end]
    name, _, rest = info.partition(" ")
    properties = {}
    for pair in rest.strip().split(","):
        key, sep, value = pair.partition("=")
        if pair and sep and key and value:
            properties[key] = unescape(value, PROPERTY_ESCAPES)
    data = unescape(text[end + 2 :], DATA_ESCAPES)
    return {"command": name, "properties": properties, "data": data}


class Refused(Exception):
    """action.yml uses something this harness does not implement the way GitHub does."""


def evaluate(text, ctx, where):
    """`text` with each `${{ expr }}` replaced by its value (a missing one is '')."""
    if not isinstance(text, str):
        text = "" if text is None else str(text).lower() if isinstance(text, bool) else str(text)

    def one(match):
        expr = match.group(1).strip()
        for kind, form in zip(("inputs", "github", "steps", "env"), FORMS):
            m = form.match(expr)
            if not m:
                continue
            if kind == "steps":
                return ctx["steps"].get(m.group(1), {}).get(m.group(2), "")
            return ctx[kind].get(m.group(1), "")
        raise Refused(f"{where}: the expression ${{{{ {expr} }}}} is not one this harness knows")

    return EXPR.sub(one, text)


def parse_file_commands(path):
    """The `name=value` and `name<<DELIM` … `DELIM` entries of GITHUB_OUTPUT / GITHUB_ENV."""
    values = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        if not line:
            continue
        heredoc = re.match(r"^([^=<]+)<<(.+)$", line)
        if heredoc:
            name, delim, body = heredoc.group(1), heredoc.group(2), []
            while i < len(lines) and lines[i].rstrip("\r") != delim:
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{path}: {name}<<{delim} is never closed")
            i += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise ValueError(f"{path}: invalid line {line!r}")
    return values


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    action_dir = job["action_dir"]
    with open(os.path.join(action_dir, "action.yml"), encoding="utf-8") as f:
        action = yaml.safe_load(f)
    runs = action["runs"]
    if runs.get("using") != "composite":
        raise Refused("runs.using is not composite")

    step_id = job["step_id"]
    workspace, temp = job["workspace"], job["runner_temp"]
    github = {
        "action": step_id,
        "action_path": action_dir,
        "workspace": workspace,
        **job.get("github", {}),
    }
    ctx = {"github": github, "inputs": {}, "steps": {}, "env": dict(job["env"])}

    declared = action.get("inputs") or {}
    given = job.get("with", {})
    unknown = set(given) - set(declared)
    if unknown:
        raise Refused(f"inputs not declared in action.yml: {sorted(unknown)}")
    for name, spec in declared.items():
        if name in given:
            ctx["inputs"][name] = evaluate(given[name], ctx, f"with.{name}")
        else:
            ctx["inputs"][name] = evaluate((spec or {}).get("default", ""), ctx, f"inputs.{name}.default")

    job_env = dict(job["env"])
    path_added = []
    raw_log, masked_log, masks, annotations, commands, steps = [], [], [], [], [], []
    conclusion = "success"

    for index, step in enumerate(runs["steps"]):
        extra = set(step) - STEP_KEYS
        if extra:
            raise Refused(f"step {index}: keys {sorted(extra)} are not handled (if:, uses:, ...)")
        if step.get("shell") != "bash":
            raise Refused(f"step {index}: shell {step.get('shell')!r} is not bash")
        run = step["run"]
        if "${{" in run:
            raise Refused(f"step {index}: ${{{{ }}}} inside run: is script injection; use env:")
        sid = step.get("id") or f"__run_{index}"
        if conclusion == "failure":
            steps.append({"id": sid, "skipped": True})
            continue

        files = {}
        for var in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            files[var] = os.path.join(temp, "_runner_file_commands", f"{var.lower()}_{uuid.uuid4()}")
            os.makedirs(os.path.dirname(files[var]), exist_ok=True)
            open(files[var], "w").close()
        script = os.path.join(temp, f"{uuid.uuid4()}.sh")
        with open(script, "w", encoding="utf-8") as f:
            f.write(run)

        env = dict(job_env)
        if path_added:
            env["PATH"] = os.pathsep.join(list(reversed(path_added)) + [job_env.get("PATH", "")])
        env.update(
            {
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_ACTION": step_id,
                "GITHUB_ACTION_PATH": action_dir,
                "GITHUB_WORKSPACE": workspace,
                "GITHUB_RUN_ID": github.get("run_id", ""),
                "GITHUB_RUN_ATTEMPT": github.get("run_attempt", "1"),
                "GITHUB_JOB": github.get("job", ""),
                "RUNNER_TEMP": temp,
                "RUNNER_OS": "Linux",
                **files,
            }
        )
        ctx["env"] = dict(env)
        for key, value in (step.get("env") or {}).items():
            env[key] = evaluate(value, ctx, f"step {sid} env.{key}")

        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", script],
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=STEP_TIMEOUT,
        )
        for stream in (proc.stdout, proc.stderr):
            for line in stream.decode("utf-8", "replace").splitlines():
                raw_log.append(line)
                command = parse_command(line)
                if command:
                    commands.append(command)
                    if command["command"] == "add-mask":
                        if command["data"]:
                            masks.append(command["data"])
                        continue
                    if command["command"] in ("error", "warning", "notice"):
                        annotations.append(
                            {
                                "level": command["command"],
                                "message": command["data"],
                                "properties": command["properties"],
                            }
                        )
                for secret in masks:
                    line = line.replace(secret, "***")
                masked_log.append(line)

        outputs = parse_file_commands(files["GITHUB_OUTPUT"])
        ctx["steps"][sid] = outputs
        job_env.update(parse_file_commands(files["GITHUB_ENV"]))
        with open(files["GITHUB_PATH"], encoding="utf-8") as f:
            path_added.extend(line for line in f.read().splitlines() if line)
        steps.append({"id": sid, "exit_code": proc.returncode, "outputs": outputs})
        if proc.returncode != 0:
            conclusion = "failure"

    ctx["env"] = job_env
    outputs = {
        name: evaluate(spec.get("value", ""), ctx, f"outputs.{name}")
        for name, spec in (action.get("outputs") or {}).items()
    }
    json.dump(
        {
            "conclusion": conclusion,
            "outputs": outputs,
            "steps": steps,
            "annotations": annotations,
            "commands": commands,
            "masks": masks,
            "raw_log": "\n".join(raw_log),
            "masked_log": "\n".join(masked_log),
            "path_added": path_added,
        },
        sys.stdout,
    )


def check_uses(action_dir, files):
    """The faults of the `with:` of each step of `files` that uses the action."""
    with open(os.path.join(action_dir, "action.yml"), encoding="utf-8") as f:
        declared = set((yaml.safe_load(f).get("inputs") or {}))
    faults = []
    for name in files:
        with open(name, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        if isinstance(doc, dict):
            steps = [s for job in (doc.get("jobs") or {}).values() for s in job.get("steps", [])]
        else:
            steps = doc or []
        uses = [s for s in steps if re.match(r"^(\./|[^/@]+/envoi@)", s.get("uses", ""))]
        if not uses:
            faults.append(f"{name}: no step uses the action")
        for step in uses:
            unknown = set(step.get("with") or {}) - declared
            if unknown:
                faults.append(f"{name}: inputs that action.yml does not declare: {sorted(unknown)}")
    return faults


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check-uses"]:
        problems = check_uses(sys.argv[2], sys.argv[3:])
        print("\n".join(problems))
        sys.exit(1 if problems else 0)
    try:
        main()
    except Refused as e:
        print(f"action_runner: refused: {e}", file=sys.stderr)
        sys.exit(3)
