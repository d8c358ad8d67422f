//! Building a report in the buffers of one already sent. A simulated cluster builds a report per
//! node per interval, some 180 strings and vectors each at 8 GPUs and 8 NICs; its agents are
//! thousands of machines, the simulator is one thread. So the runner hands every sent report back
//! (`World::recycle`), and the next report is written into its allocations. These helpers take the
//! old value and return it holding the new one, so that each sample is still written as a whole
//! struct literal: a field cannot be left holding the old report's value.

/// `old`, now holding `v`.
pub(super) fn text(mut old: String, v: &str) -> String {
    old.clear();
    old.push_str(v);
    old
}

/// `Some(v)`, in `old`'s buffer when it had one.
pub(super) fn some_text(old: Option<String>, v: &str) -> Option<String> {
    Some(text(old.unwrap_or_default(), v))
}

/// `old`, now holding `items`: its strings are overwritten, the ones left over dropped.
pub(super) fn texts<'a>(mut old: Vec<String>, items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut k = 0;
    for v in items {
        match old.get_mut(k) {
            Some(s) => {
                s.clear();
                s.push_str(v);
            }
            None => old.push(v.to_string()),
        }
        k += 1;
    }
    old.truncate(k);
    old
}

/// `old`'s buffer, now holding `items` only.
pub(super) fn filled<T>(mut old: Vec<T>, items: impl IntoIterator<Item = T>) -> Vec<T> {
    old.clear();
    old.extend(items);
    old
}

/// `v` with exactly `n` entries: the first `n` it had (still holding the old report's values, for
/// the caller to overwrite), then defaults.
pub(super) fn slots<T: Default>(v: &mut Vec<T>, n: usize) {
    v.truncate(n);
    v.resize_with(n, T::default);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_overwrites_grows_and_shrinks() {
        let old = vec!["aaaa".to_string(), "b".to_string(), "c".to_string()];
        let v = texts(old, ["x", "yy"]);
        assert_eq!(v, ["x", "yy"]);
        let v = texts(v, ["1", "2", "3"]);
        assert_eq!(v, ["1", "2", "3"]);
        assert!(texts(v, []).is_empty());
        assert_eq!(some_text(Some("long old value".into()), "v"), Some("v".to_string()));
        assert_eq!(some_text(None, "v"), Some("v".to_string()));
        assert_eq!(filled(vec![7, 8, 9], [1]), [1]);
        assert!(filled(vec![7], None).is_empty());
        let mut s = vec![1, 2, 3];
        slots(&mut s, 2);
        assert_eq!(s, [1, 2]);
        slots(&mut s, 4);
        assert_eq!(s, [1, 2, 0, 0]);
    }
}
