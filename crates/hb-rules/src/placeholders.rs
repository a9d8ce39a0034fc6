//! Placeholders in commands written in BUILD.toml (`{prefix}`, `{out}`, …): a word of
//! lowercase letters in braces, not preceded by `$`, is a placeholder and must be one
//! the setting knows; any other brace is literal, so shell text such as `${HOME}` or
//! `{a,b}` passes through untouched.

/// A piece of a text: literal, or a placeholder's name.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits `text` into literal pieces and placeholders, each of which must be in `known`.
pub fn split<'a>(text: &'a str, known: &[&str]) -> Result<Vec<Piece<'a>>, String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while let Some(open) = text.get(i..).and_then(|r| r.find('{')).map(|o| o + i) {
        let name_end = text.get(open + 1..).and_then(|r| r.find(|c: char| !(c.is_ascii_lowercase() || c == '_')));
        let close = name_end.map(|e| e + open + 1);
        let dollar = open > 0 && bytes.get(open - 1) == Some(&b'$');
        match close {
            Some(close) if close > open + 1 && bytes.get(close) == Some(&b'}') && !dollar => {
                let name = text.get(open + 1..close).unwrap_or_default();
                if !known.contains(&name) {
                    let list: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
                    return Err(format!("unknown placeholder `{{{name}}}`; known here: {}", list.join(", ")));
                }
                if open > start {
                    pieces.push(Piece::Text(text.get(start..open).unwrap_or_default()));
                }
                pieces.push(Piece::Placeholder(name));
                start = close + 1;
                i = close + 1;
            }
            _ => i = open + 1,
        }
    }
    if start < text.len() {
        pieces.push(Piece::Text(text.get(start..).unwrap_or_default()));
    }
    Ok(pieces)
}

/// `text` with each placeholder replaced by `value(name)`.
pub fn expand(
    text: &str,
    known: &[&str],
    mut value: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    for piece in split(text, known)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => out.push_str(&value(name)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_literal_braces() {
        let known = ["prefix", "out"];
        assert_eq!(split("{prefix}/bin/x", &known).unwrap(), [Piece::Placeholder("prefix"), Piece::Text("/bin/x")]);
        assert_eq!(
            split("a ${out} {a,b} {} {X} {out}", &known).unwrap(),
            [Piece::Text("a ${out} {a,b} {} {X} "), Piece::Placeholder("out")]
        );
        assert_eq!(split("", &known).unwrap(), []);
        assert!(split("{prefx}/bin", &known).unwrap_err().contains("{prefix}, {out}"));
        assert_eq!(expand("{out}/{out}", &known, |n| Ok(n.to_uppercase())).unwrap(), "OUT/OUT");
        assert_eq!(split("{", &known).unwrap(), [Piece::Text("{")]);
    }
}
