//! The JSON of `midge_sub -F %j` / `%J`, byte for byte as `mosquitto_sub`
//! prints it with cJSON: [`parse`] reads a payload (`%J`) into a [`Value`]
//! and [`Value::print`] writes cJSON's compact or `--pretty` form.

/// A JSON value; objects keep their members' order and duplicates.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    Str(Vec<u8>),
    Array(Vec<Value>),
    Object(Vec<(Vec<u8>, Value)>),
}

/// cJSON refuses deeper nesting; so does midge, and so no payload can
/// exhaust the stack.
const NESTING_LIMIT: usize = 1000;

impl Value {
    /// Appends the value as cJSON_PrintUnformatted (or cJSON_Print when
    /// `pretty`) would.
    pub fn print(&self, pretty: bool, out: &mut Vec<u8>) {
        self.print_at(pretty, 0, out);
    }

    fn print_at(&self, pretty: bool, depth: usize, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Number(d) => print_number(*d, out),
            Value::Str(s) => print_string(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                        if pretty {
                            out.push(b' ');
                        }
                    }
                    v.print_at(pretty, depth + 1, out);
                }
                out.push(b']');
            }
            Value::Object(members) => {
                out.push(b'{');
                if pretty {
                    out.push(b'\n');
                }
                for (i, (k, v)) in members.iter().enumerate() {
                    if pretty {
                        out.resize(out.len() + depth + 1, b'\t');
                    }
                    print_string(k, out);
                    out.push(b':');
                    if pretty {
                        out.push(b'\t');
                    }
                    v.print_at(pretty, depth + 1, out);
                    if i + 1 < members.len() {
                        out.push(b',');
                    }
                    if pretty {
                        out.push(b'\n');
                    }
                }
                if pretty {
                    out.resize(out.len() + depth, b'\t');
                }
                out.push(b'}');
            }
        }
    }
}

/// cJSON's string form: `"`, `\` and control characters escaped, all
/// other bytes as they are.
pub fn print_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// cJSON's number form: an integer as `%d`, else `%1.15g`, or `%1.17g`
/// when 15 digits do not give the same double back.
pub fn print_number(d: f64, out: &mut Vec<u8>) {
    if !d.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let as_int = if d >= f64::from(i32::MAX) {
        i32::MAX
    } else if d <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        d as i32
    };
    if d == f64::from(as_int) {
        out.extend_from_slice(as_int.to_string().as_bytes());
        return;
    }
    let short = format_g(d, 15);
    let text = if short.parse::<f64>().ok() == Some(d) {
        short
    } else {
        format_g(d, 17)
    };
    out.extend_from_slice(text.as_bytes());
}

/// C's `%1.<precision>g`.
fn format_g(d: f64, precision: usize) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:.*e}", precision - 1, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let p = precision as i32;
    if exp < -4 || exp >= p {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = (p - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{d:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Parses a whole payload as cJSON_ParseWithOpts(.., true) does: one value,
/// blanks around it, nothing else. `None` for anything else.
pub fn parse(text: &[u8]) -> Option<Value> {
    let mut p = Parser { s: text, i: 0 };
    if p.s.starts_with(b"\xEF\xBB\xBF") {
        p.i = 3;
    }
    let v = p.value(0)?;
    p.blank();
    (p.i == p.s.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    /// `0 <= i <= s.len()`.
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// cJSON skips every byte up to and including the space.
    fn blank(&mut self) {
        while self.peek().is_some_and(|b| b != 0 && b <= 32) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Option<Value> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(v)
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth >= NESTING_LIMIT {
            return None;
        }
        self.blank();
        match self.peek()? {
            b'n' => self.literal(b"null", Value::Null),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'"' => self.string().map(Value::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.blank();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Some(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.blank();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(Value::Array(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.blank();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Some(Value::Object(members));
                }
                loop {
                    self.blank();
                    if self.peek()? != b'"' {
                        return None;
                    }
                    let k = self.string()?;
                    self.blank();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.blank();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(Value::Object(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// strtod over the run of number characters cJSON collects.
    fn number(&mut self) -> Option<Value> {
        let run = self.s[self.i..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'e' | b'E' | b'.'))
            .count();
        let text = std::str::from_utf8(&self.s[self.i..self.i + run]).ok()?;
        let (n, used) = (1..=run)
            .rev()
            .find_map(|k| text[..k].parse::<f64>().ok().map(|n| (n, k)))?;
        self.i += used;
        Some(Value::Number(n))
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        self.i += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0C),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'u' => {
                            let mut c = self.hex4()?;
                            if (0xDC00..=0xDFFF).contains(&c) {
                                return None;
                            }
                            if (0xD800..=0xDBFF).contains(&c) {
                                if self.s.get(self.i..self.i + 2)? != b"\\u" {
                                    return None;
                                }
                                self.i += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..=0xDFFF).contains(&low) {
                                    return None;
                                }
                                c = 0x10000 + (((c & 0x3FF) << 10) | (low & 0x3FF));
                            }
                            let ch = char::from_u32(c)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str, pretty: bool) -> String {
        let mut out = Vec::new();
        parse(text.as_bytes())
            .expect("valid JSON")
            .print(pretty, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_as_cjson() {
        assert_eq!(
            round(r#" {"a": 27.0, "b":[1,2.5,"x\n"]} "#, false),
            r#"{"a":27,"b":[1,2.5,"x\n"]}"#
        );
        assert_eq!(
            round(r#"{"a":{"b":[1,2]},"c":{}}"#, true),
            "{\n\t\"a\":\t{\n\t\t\"b\":\t[1, 2]\n\t},\n\t\"c\":\t{\n\t}\n}"
        );
        assert_eq!(round("0.1", false), "0.1");
        assert_eq!(round("3e9", false), "3000000000");
        assert_eq!(round("1e-7", false), "1e-07");
        assert_eq!(round(r#""\u00e9\ud83d\ude00""#, false), "\"é😀\"");
    }

    #[test]
    fn refuses_what_cjson_refuses() {
        for bad in [
            "",
            "{",
            "[1,]",
            "1 2",
            "{\"a\" 1}",
            "tru",
            "\"\\x\"",
            "1.2.3",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        let deep = "[".repeat(5000);
        assert!(parse(deep.as_bytes()).is_none());
    }
}
