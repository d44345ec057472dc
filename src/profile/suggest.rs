//! "Did you mean …?": the known name nearest to a mistyped one, for an unknown profile.

/// The name in `known` the user most likely meant by `typed`: one at most two edits
/// away (optimal string alignment distance, so a swapped pair of letters, as in
/// `lcoal`, is one edit; never as many edits as `typed` has letters), else one that
/// begins with `typed` or that `typed` begins with. Case is ignored; the nearest wins,
/// then the first in `known`'s order. `None` when nothing is near.
pub(crate) fn nearest<'a>(
    typed: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let typed: Vec<char> = typed.to_lowercase().chars().collect();
    if typed.is_empty() {
        return None;
    }
    known
        .into_iter()
        .filter_map(|name| {
            let candidate: Vec<char> = name.to_lowercase().chars().collect();
            let edits = distance(&typed, &candidate);
            let rank = if edits <= 2 && edits < typed.len() {
                edits
            } else if candidate.starts_with(&typed) || typed.starts_with(&candidate) {
                3
            } else {
                return None;
            };
            Some((rank, name))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, name)| name)
}

/// The optimal string alignment distance: insertions, deletions, substitutions and
/// swaps of two neighbours, each one edit. Names are short, so the full table is cheap.
fn distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        table[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        table[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[at(i - 1, j)] + 1)
                .min(table[at(i, j - 1)] + 1)
                .min(table[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[at(i - 2, j - 2)] + 1);
            }
            table[at(i, j)] = best;
        }
    }
    table[at(a.len(), b.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 5] = ["gmail-api", "lab", "local", "m365", "work"];

    #[test]
    fn typos_swaps_and_prefixes_find_the_name() {
        for (typed, want) in [
            ("lcoal", "local"),
            ("locl", "local"),
            ("LOCAL", "local"),
            ("wrok", "work"),
            ("works", "work"),
            ("gmail", "gmail-api"),
            ("m356", "m365"),
        ] {
            assert_eq!(nearest(typed, KNOWN), Some(want), "{typed}");
        }
    }

    #[test]
    fn nothing_near_suggests_nothing() {
        for typed in ["", "x", "zz", "production", "smtp"] {
            assert_eq!(nearest(typed, KNOWN), None, "{typed}");
        }
        assert_eq!(nearest("local", []), None);
    }

    #[test]
    fn the_nearest_wins() {
        assert_eq!(nearest("labs", ["lamp", "lab"]), Some("lab"));
        assert_eq!(nearest("ab", ["abc", "abd"]), Some("abc"), "first of a tie");
    }
}
