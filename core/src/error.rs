//! The one error-chain helper of the workspace.

/// An error and its `source()` chain as one line, `outer: cause: root cause`: for a CNI message
/// or a log line, which have no room for a chain of their own.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_source() {
        let e = Outer(Middle(std::io::Error::other("root")));
        assert_eq!(chain(&e), "outer: middle: root");
        let two = Middle(std::io::Error::other("root"));
        assert_eq!(chain(&two), "middle: root");
    }

    #[test]
    fn chain_of_an_error_without_source_is_its_message() {
        assert_eq!(chain(&std::io::Error::other("plain")), "plain");
    }
}
