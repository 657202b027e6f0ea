//! Conditional requests (RFC 9110 §13): the entity tags of `If-Match` and
//! `If-None-Match`, parsed from the header text. What a tag means is the
//! resource's business; this only reads the list.

/// One entity tag: its opaque text (between the quotes) and whether it was
/// sent as weak (`W/"..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    pub opaque: String,
}

/// What an `If-Match` or `If-None-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags. Elements that are not entity tags are left out:
    /// they match nothing, so a header of nothing but those matches nothing.
    Tags(Vec<EntityTag>),
}

impl Condition {
    /// The condition a header value states.
    pub fn parse(value: &str) -> Condition {
        let value = value.trim_matches([' ', '\t']);
        if value == "*" {
            return Condition::Any;
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let (weak, after_prefix) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let parsed = after_prefix.strip_prefix('"').and_then(|inside| {
                let end = inside.find('"')?;
                Some((&inside[..end], &inside[end + 1..]))
            });
            match parsed {
                // A tag must end where the element ends.
                Some((opaque, after)) if ends_element(after) => {
                    tags.push(EntityTag { weak, opaque: opaque.to_owned() });
                    rest = after;
                }
                // Not an entity tag: skip to the next comma.
                _ => rest = rest.find(',').map_or("", |comma| &rest[comma + 1..]),
            }
        }
        Condition::Tags(tags)
    }

    /// Whether a resource whose strong tag is `current` passes `If-Match`:
    /// `*`, or a strong tag equal to it (strong comparison).
    pub fn matches_strongly(&self, current: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|tag| !tag.weak && tag.opaque == current),
        }
    }

    /// Whether a resource whose tag is `current` matches `If-None-Match`
    /// (weak comparison: `W/"x"` matches `"x"`).
    pub fn matches_weakly(&self, current: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|tag| tag.opaque == current),
        }
    }
}

/// Whether `after` (what follows a closing quote) ends the list element.
fn ends_element(after: &str) -> bool {
    let after = after.trim_start_matches([' ', '\t']);
    after.is_empty() || after.starts_with(',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong(opaque: &str) -> EntityTag {
        EntityTag { weak: false, opaque: opaque.into() }
    }

    #[test]
    fn a_star_means_any_representation() {
        assert_eq!(Condition::parse("*"), Condition::Any);
        assert_eq!(Condition::parse(" * "), Condition::Any);
    }

    #[test]
    fn a_list_of_tags_is_read_with_their_weakness() {
        let condition = Condition::parse(r#""4-1", W/"4-2" ,"a,b""#);
        let weak = EntityTag { weak: true, opaque: "4-2".into() };
        assert_eq!(condition, Condition::Tags(vec![strong("4-1"), weak, strong("a,b")]));
    }

    #[test]
    fn elements_that_are_not_entity_tags_match_nothing() {
        assert_eq!(Condition::parse("4-1"), Condition::Tags(vec![]));
        assert_eq!(Condition::parse(r#"garbage, "4-1""#), Condition::Tags(vec![strong("4-1")]));
        assert_eq!(Condition::parse(r#""unterminated"#), Condition::Tags(vec![]));
        assert_eq!(Condition::parse(r#""4-1"x, "4-2""#), Condition::Tags(vec![strong("4-2")]));
        assert_eq!(Condition::parse(""), Condition::Tags(vec![]));
    }

    #[test]
    fn if_match_compares_strongly_and_if_none_match_weakly() {
        let condition = Condition::parse(r#"W/"4-2", "4-3""#);
        assert!(condition.matches_strongly("4-3"));
        assert!(!condition.matches_strongly("4-2"), "a weak tag never matches If-Match");
        assert!(condition.matches_weakly("4-2"));
        assert!(!condition.matches_weakly("4-4"));
        assert!(Condition::Any.matches_strongly("anything") && Condition::Any.matches_weakly("anything"));
    }
}
