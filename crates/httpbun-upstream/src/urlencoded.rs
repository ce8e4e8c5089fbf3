//! `application/x-www-form-urlencoded` parsing with Go's `url.ParseQuery` rules, which httpbun
//! uses for both the query string and form bodies.

/// Pairs in order, plus the first error. Go skips a bad pair (a `;`, or an invalid `%` escape)
/// and goes on with the rest.
fn parse_all(input: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut pairs = Vec::new();
    let mut error = None;
    for part in input.split('&') {
        if part.contains(';') {
            error.get_or_insert_with(|| "invalid semicolon separator in query".to_string());
            continue;
        }
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match (unescape(key), unescape(value)) {
            (Ok(key), Ok(value)) => pairs.push((key, value)),
            (Err(err), _) | (_, Err(err)) => {
                error.get_or_insert(err);
            }
        }
    }
    (pairs, error)
}

/// Strict: any bad pair fails the whole input, as httpbun treats a form body.
pub fn parse(input: &str) -> Result<Vec<(String, String)>, String> {
    match parse_all(input) {
        (pairs, None) => Ok(pairs),
        (_, Some(err)) => Err(err),
    }
}

/// Lenient: bad pairs are dropped, as Go's `URL.Query()` does for the query string.
pub fn parse_lenient(input: &str) -> Vec<(String, String)> {
    parse_all(input).0
}

/// `+` is a space and `%XX` a byte; the bytes are then read as UTF-8, invalid sequences replaced
/// (Go keeps the raw bytes, but its JSON encoder replaces them the same way).
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        let end = (i + 3).min(bytes.len());
                        return Err(format!(
                            "invalid URL escape {:?}",
                            String::from_utf8_lossy(&bytes[i..end])
                        ));
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn like_go() {
        assert_eq!(
            parse("a=1&b=x+y&a=2&c&&d=%41%2f").unwrap(),
            pairs(&[("a", "1"), ("b", "x y"), ("a", "2"), ("c", ""), ("d", "A/")])
        );
        assert!(parse("a=1;b=2").is_err());
        assert!(parse("a=%zz").is_err());
        assert_eq!(parse_lenient("a=%zz&b=1&c=1;d=2"), pairs(&[("b", "1")]));
        assert_eq!(parse("").unwrap(), pairs(&[]));
    }
}
