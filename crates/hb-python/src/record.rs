//! The `RECORD` file of a `.dist-info` directory: parsing its CSV rows (with quoted
//! fields), the `sha256=<urlsafe base64 without padding>` hash notation, and writing a
//! RECORD back with rows sorted bytewise and fields quoted only where CSV needs it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// One row of a RECORD file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub path: String,
    pub hash: String,
    pub size: String,
}

/// Checks a RECORD hash (`algo=<urlsafe base64>`) against `bytes`. The wheel spec asks
/// for sha256 or better: sha256, sha384 and sha512 are accepted; md5 and sha1 are not.
/// Returns the actual hash (in the same algorithm) on a mismatch.
pub fn check_hash(recorded: &str, bytes: &[u8]) -> Result<(), HashProblem> {
    let (algo, value) = recorded.split_once('=').ok_or(HashProblem::Unsupported)?;
    let actual = match algo {
        "sha256" => URL_SAFE_NO_PAD.encode(Sha256::digest(bytes)),
        "sha384" => URL_SAFE_NO_PAD.encode(Sha384::digest(bytes)),
        "sha512" => URL_SAFE_NO_PAD.encode(Sha512::digest(bytes)),
        _ => return Err(HashProblem::Unsupported),
    };
    if actual == value.trim_end_matches('=') { Ok(()) } else { Err(HashProblem::Mismatch(format!("{algo}={actual}"))) }
}

/// Why [`check_hash`] refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HashProblem {
    /// Not `sha256=`, `sha384=` or `sha512=`.
    Unsupported,
    /// The bytes hash to this instead.
    Mismatch(String),
}

/// `sha256=<urlsafe base64, no padding>` of `bytes`.
pub fn hash_of(bytes: &[u8]) -> String {
    format!("sha256={}", URL_SAFE_NO_PAD.encode(Sha256::digest(bytes)))
}

/// Parses CSV text into rows of fields (RFC 4180 quoting; `\n` or `\r\n` line ends).
/// Blank lines are skipped. Errors carry the 1-based row number.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false; // inside a quoted field
    let mut was_quoted = false; // the current field started with a quote
    let mut line = 1usize;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err(format!("row {line}: a quote inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !(row.is_empty() && field.is_empty() && !was_quoted) {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                was_quoted = false;
                line += 1;
            }
            _ if was_quoted => return Err(format!("row {line}: text after the closing quote of a field")),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("row {line}: a quoted field is not closed"));
    }
    if !(row.is_empty() && field.is_empty() && !was_quoted) {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Parses RECORD text into rows of exactly three fields.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    parse_csv(text)?
        .into_iter()
        .enumerate()
        .map(|(i, fields)| match <[String; 3]>::try_from(fields) {
            Ok([path, hash, size]) => Ok(Row { path, hash, size }),
            Err(f) => Err(format!("row {} has {} fields instead of 3 (path,hash,size)", i + 1, f.len())),
        })
        .collect()
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Renders rows as RECORD text: one `path,hash,size` line each, sorted bytewise by path.
pub fn render(rows: &[Row]) -> String {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.path, &a.hash, &a.size).cmp(&(&b.path, &b.hash, &b.size)));
    sorted.iter().map(|r| format!("{},{},{}\n", quote(&r.path), quote(&r.hash), quote(&r.size))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_pip() {
        assert_eq!(check_hash("sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", b""), Ok(()));
        assert_eq!(check_hash("sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=", b""), Ok(()));
        let sha512 = format!("sha512={}", URL_SAFE_NO_PAD.encode(Sha512::digest(b"x")));
        assert_eq!(check_hash(&sha512, b"x"), Ok(()));
        assert!(matches!(check_hash(&sha512, b"y"), Err(HashProblem::Mismatch(_))));
        assert_eq!(check_hash("md5=abc", b""), Err(HashProblem::Unsupported));
        // sha256 of the empty string, urlsafe base64 without padding.
        assert_eq!(hash_of(b""), "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
    }

    #[test]
    fn parses_quoted_fields_and_line_ends() {
        let rows = parse_csv("a,b,c\r\n\"x,y\",\"say \"\"hi\"\"\",\n\n\"multi\nline\",,1").unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into(), "c".into()],
                vec!["x,y".into(), "say \"hi\"".into(), "".into()],
                vec!["multi\nline".into(), "".into(), "1".into()],
            ]
        );
        assert!(parse_csv("\"open,1,2").is_err());
        assert!(parse_csv("a\"b,1,2").is_err());
        assert!(parse("a,b\n").is_err());
    }

    #[test]
    fn renders_sorted_and_round_trips() {
        let rows = vec![
            Row { path: "b,c".into(), hash: "sha256=x".into(), size: "1".into() },
            Row { path: "a\"q".into(), hash: String::new(), size: String::new() },
            Row { path: "B".into(), hash: "sha256=y".into(), size: "2".into() },
        ];
        let text = render(&rows);
        assert_eq!(text, "B,sha256=y,2\n\"a\"\"q\",,\n\"b,c\",sha256=x,1\n");
        let mut back = parse(&text).unwrap();
        back.sort_by(|a, b| a.path.cmp(&b.path));
        let mut want = rows.clone();
        want.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(back, want);
    }
}
