//! The lexing half of the fast path: one pass over the text, strings
//! borrowed where they have no escapes, values skipped without buffering.
//! Every function returns `None` as soon as the input is anything it is not
//! certain of; the caller then leaves the text to serde.

use std::borrow::Cow;

/// Keys per object beyond which the fast path gives up.
const MAX_KEYS: usize = 24;
/// Nesting beyond which the fast path gives up (serde_json stops at 128).
const MAX_DEPTH: usize = 64;

/// A value as far as validation needs it.
pub(super) enum Val<'a> {
    Null,
    Str(Cow<'a, str>),
    /// A non-negative integer written with digits only.
    UInt(u64),
    /// Any other valid JSON value (starting at this offset).
    Other(usize),
}

/// A position in the text being scanned.
pub(super) struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    pub(super) i: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner on byte `at` of `text`.
    pub(super) fn new(text: &'a str, at: usize) -> Self {
        Scanner {
            s: text,
            b: text.as_bytes(),
            i: at,
        }
    }

    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(super) fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string; the scanner is on its opening quote.
    /// Skips bytes that are neither a quote, a backslash nor a control
    /// character, eight at a time.
    fn skip_plain(&mut self) {
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            if may_end_string(u64::from_le_bytes(word)) {
                break;
            }
            self.i += 8;
        }
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.i += 1;
        let start = self.i;
        loop {
            self.skip_plain();
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Borrowed(&self.s[start..self.i - 1]));
                }
                b'\\' => return self.escaped(start).map(Cow::Owned),
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// The rest of a string that has escapes; `start` is its first byte.
    fn escaped(&mut self, start: usize) -> Option<String> {
        let mut out = String::with_capacity(self.i - start + 16);
        let mut run = start;
        loop {
            self.skip_plain();
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    out.push_str(&self.s[run..self.i]);
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(&self.s[run..self.i]);
                    let e = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4)?;
                            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                                return None;
                            }
                            let code = u32::from_str_radix(hex, 16).ok()?;
                            // Surrogate pairs are left to serde.
                            out.push(char::from_u32(code)?);
                            self.i += 4;
                        }
                        _ => return None,
                    }
                    run = self.i;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// An object key without escapes, and the colon after it.
    fn key(&mut self) -> Option<&'a str> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        match self.string()? {
            Cow::Borrowed(k) => {
                self.eat(b':')?;
                Some(k)
            }
            Cow::Owned(_) => None,
        }
    }

    /// An integer (the only numbers the fast path takes), small enough
    /// that serde_json reads it exactly.
    fn number(&mut self) -> Option<Val<'a>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty()
            || digits.len() > 18
            || (digits.len() > 1 && digits.starts_with('0'))
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        if negative {
            // `-0` is read as 0 by serde_json: not worth mimicking.
            return (digits != "0").then_some(Val::Other(start - 1));
        }
        digits.parse().ok().map(Val::UInt)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.s[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// Any value; `depth` is the nesting of the object or array holding it.
    fn value(&mut self, depth: usize) -> Option<Val<'a>> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => self.string().map(Val::Str),
            b'n' => self.literal("null").map(|_| Val::Null),
            b't' => self.literal("true").map(|_| Val::Other(start)),
            b'f' => self.literal("false").map(|_| Val::Other(start)),
            b'-' | b'0'..=b'9' => self.number(),
            b'{' => {
                self.skip_object(depth + 1)?;
                Some(Val::Other(start))
            }
            b'[' => {
                self.skip_array(depth + 1)?;
                Some(Val::Other(start))
            }
            _ => None,
        }
    }

    fn skip_object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            // Keys of nested values may have escapes: only valid JSON
            // matters here.
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            self.string()?;
            self.eat(b':')?;
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn skip_array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The fields of an object (the scanner on its `{`), each key once.
    pub(super) fn fields(&mut self, depth: usize) -> Option<Fields<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut fields = Fields(Vec::with_capacity(8));
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(fields);
        }
        loop {
            let key = self.key()?;
            let value = self.value(depth)?;
            if fields.0.len() == MAX_KEYS || fields.0.iter().any(|(k, _)| *k == key) {
                return None;
            }
            fields.0.push((key, value));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(fields);
                }
                _ => return None,
            }
        }
    }
}

/// Whether any of the eight bytes of `w` is a quote, a backslash or a
/// control character (exact for "none"; the caller then checks byte by
/// byte).
fn may_end_string(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (quote | backslash | control) != 0
}

/// The members of an object, each key once.
pub(super) struct Fields<'a>(Vec<(&'a str, Val<'a>)>);

impl<'a> Fields<'a> {
    pub(super) fn take(&mut self, name: &str) -> Option<Val<'a>> {
        let i = self.0.iter().position(|(k, _)| *k == name)?;
        Some(self.0.swap_remove(i).1)
    }

    /// The tag: a string without escapes.
    pub(super) fn tag(&mut self) -> Option<&'a str> {
        match self.take("type")? {
            Val::Str(Cow::Borrowed(t)) => Some(t),
            _ => None,
        }
    }

    /// An optional string: `Some(None)` when absent or null, `None` when
    /// of another type.
    pub(super) fn opt_str(&mut self, name: &str) -> Option<Option<Cow<'a, str>>> {
        match self.take(name) {
            None | Some(Val::Null) => Some(None),
            Some(Val::Str(s)) => Some(Some(s)),
            Some(_) => None,
        }
    }

    pub(super) fn req_str(&mut self, name: &str) -> Option<Cow<'a, str>> {
        match self.take(name)? {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}
