//! Decoded views of a text, with a map from every view offset back to the
//! original.
//!
//! Secrets reach the sinks in disguise: percent-encoded in URLs, JSON-escaped
//! once or twice inside tool-call arguments, `\u002d`-escaped, or wrapped over
//! two lines by a model. Rather than teaching every rule every disguise, the
//! scrubber also runs the rules on a decoded copy and on a copy with wrapped
//! tokens re-joined, then maps each match back so that the span removed is
//! always a span of the original text.

use std::ops::Range;

/// Double-escaped JSON inside a JSON string inside a log line is common; more
/// than four levels is not, and each level costs a pass over the text.
const MAX_DECODE_DEPTH: usize = 4;

/// A run of view bytes and the source bytes it came from.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Start of the run in the view.
    view: usize,
    /// Start of the run in the source.
    src: usize,
    /// Length of the run in the source.
    src_len: usize,
    /// `true`: the run is a byte-for-byte copy (same length in both).
    /// `false`: the run is one decoded escape; any part of it maps to the
    /// whole escape sequence.
    copied: bool,
}

/// One derived text and how it maps onto the text it was derived from.
#[derive(Debug)]
pub(crate) struct Layer {
    text: String,
    segs: Vec<Seg>,
    /// Positions in `text` where a line break was removed.
    joins: Vec<usize>,
}

impl Layer {
    fn seg_at(&self, pos: usize) -> Option<&Seg> {
        let i = self.segs.partition_point(|s| s.view <= pos);
        self.segs.get(i.checked_sub(1)?)
    }

    fn map_start(&self, pos: usize) -> usize {
        match self.seg_at(pos) {
            Some(s) if s.copied => s.src + (pos - s.view).min(s.src_len),
            Some(s) => s.src,
            None => pos,
        }
    }

    fn map_end(&self, pos: usize) -> usize {
        let Some(last) = pos.checked_sub(1) else {
            return self.map_start(0);
        };
        match self.seg_at(last) {
            Some(s) if s.copied => s.src + (pos - s.view).min(s.src_len),
            Some(s) => s.src + s.src_len,
            None => pos,
        }
    }
}

struct LayerBuilder<'a> {
    src: &'a str,
    text: String,
    segs: Vec<Seg>,
}

impl<'a> LayerBuilder<'a> {
    fn new(src: &'a str) -> Self {
        Self { src, text: String::with_capacity(src.len()), segs: Vec::new() }
    }

    fn copy(&mut self, range: Range<usize>) {
        let Some(chunk) = self.src.get(range.clone()) else {
            return;
        };
        if chunk.is_empty() {
            return;
        }
        let view = self.text.len();
        self.text.push_str(chunk);
        if let Some(last) = self.segs.last_mut()
            && last.copied
            && last.src + last.src_len == range.start
            && last.view + last.src_len == view
        {
            last.src_len += chunk.len();
            return;
        }
        self.segs.push(Seg { view, src: range.start, src_len: chunk.len(), copied: true });
    }

    fn decoded(&mut self, c: char, src: Range<usize>) {
        self.segs.push(Seg { view: self.text.len(), src: src.start, src_len: src.len(), copied: false });
        self.text.push(c);
    }

    fn finish(self, joins: Vec<usize>) -> Layer {
        Layer { text: self.text, segs: self.segs, joins }
    }
}

/// A text to scan: a layer (or the original) and the parts of it worth
/// scanning.
pub(crate) struct Target<'a> {
    /// Layer index for [`Views::to_original`]; `None` for the original.
    pub(crate) layer: Option<usize>,
    pub(crate) text: &'a str,
    /// Byte ranges of `text` to scan; one range covering everything for a
    /// full scan.
    pub(crate) windows: Vec<Range<usize>>,
}

/// The original text plus its decoded and line-joined views.
#[derive(Debug)]
pub(crate) struct Views {
    /// `layers[i]` is derived from `layers[i - 1]` (or from the original).
    layers: Vec<Layer>,
    /// Number of decoding layers (the join layer, if any, comes after).
    decoded: usize,
    joined: bool,
}

impl Views {
    /// Builds the decoded and line-joined views of `original`; both are
    /// skipped (each costing one byte scan) when the text has nothing to
    /// decode or join.
    pub(crate) fn new(original: &str) -> Self {
        let mut layers: Vec<Layer> = Vec::new();
        for _ in 0..MAX_DECODE_DEPTH {
            let current = layers.last().map_or(original, |l| l.text.as_str());
            match decode_once(current) {
                Some(layer) => layers.push(layer),
                None => break,
            }
        }
        let decoded = layers.len();
        let current = layers.last().map_or(original, |l| l.text.as_str());
        let joined = match join_wrapped_tokens(current) {
            Some(layer) => {
                layers.push(layer);
                true
            }
            None => false,
        };
        Self { layers, decoded, joined }
    }

    /// What to scan so that every view is covered, at the cost of about one
    /// full scan: the most decoded text in full (the original when nothing
    /// decodes), the original only around its escapes (the one place where
    /// decoding can destroy a match), and the joined view only around its
    /// joins (the one place where it differs).
    pub(crate) fn targets<'a>(&'a self, original: &'a str) -> Vec<Target<'a>> {
        let mut targets = Vec::with_capacity(3);
        match self.decoded.checked_sub(1) {
            None => targets.push(Target { layer: None, text: original, windows: whole(original) }),
            Some(last) => {
                let text = self.layers[last].text.as_str();
                targets.push(Target { layer: Some(last), text, windows: whole(text) });
                let escapes = self.layers[0].segs.iter().filter(|s| !s.copied).map(|s| s.src..s.src + s.src_len);
                targets.push(Target {
                    layer: None,
                    text: original,
                    windows: windows(original, escapes, WINDOW_CONTEXT),
                });
            }
        }
        if self.joined {
            let layer = self.layers.len() - 1;
            let l = &self.layers[layer];
            let bytes = l.text.as_bytes();
            // Stretch each join to the whole token around it so that a long
            // wrapped token (a JWT) is scanned whole.
            let runs = l.joins.iter().map(|&at| {
                let start = at - bytes[..at].iter().rev().take_while(|&&b| is_token_byte(b)).count();
                let end = at + bytes[at..].iter().take_while(|&&b| is_token_byte(b)).count();
                start..end
            });
            targets.push(Target { layer: Some(layer), text: &l.text, windows: windows(&l.text, runs, WINDOW_CONTEXT) });
        }
        targets
    }

    /// Maps a byte range of layer `layer` back to the original text.
    pub(crate) fn to_original(&self, layer: usize, range: Range<usize>) -> Range<usize> {
        let (mut start, mut end) = (range.start, range.end);
        for l in self.layers[..=layer].iter().rev() {
            start = l.map_start(start);
            end = l.map_end(end);
        }
        start..end.max(start)
    }
}

/// Context kept on each side of a change when scanning only around it: room
/// for a key, its operator and quotes before a value, or for a token that a
/// change cuts in two.
pub(crate) const WINDOW_CONTEXT: usize = 256;

/// Merged byte ranges of `text` around `changes` (sorted by start), widened by
/// `context` and then to the surrounding whitespace so that no window starts
/// or ends inside a word. Scanning many small windows costs more than one
/// pass, so mostly-covered texts get a single full window.
pub(crate) fn windows(text: &str, changes: impl Iterator<Item = Range<usize>>, context: usize) -> Vec<Range<usize>> {
    const WORD_SLACK: usize = 64;
    let bytes = text.as_bytes();
    let mut out: Vec<Range<usize>> = Vec::new();
    for change in changes {
        let mut start = change.start.saturating_sub(context);
        let floor = start.saturating_sub(WORD_SLACK);
        while start > floor && !bytes[start - 1].is_ascii_whitespace() {
            start -= 1;
        }
        let mut end = (change.end + context).min(text.len());
        let ceil = (end + WORD_SLACK).min(text.len());
        while end < ceil && !bytes[end].is_ascii_whitespace() {
            end += 1;
        }
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    let covered: usize = out.iter().map(Range::len).sum();
    if covered * 2 > text.len() {
        return whole(text);
    }
    out
}

/// A single window covering all of `text`.
fn whole(text: &str) -> Vec<Range<usize>> {
    std::iter::once(0..text.len()).collect()
}

/// Decodes one level of percent-encoding, backslash escapes (JSON, Python,
/// Rust, C) and HTML character references. `None` when nothing was decoded.
fn decode_once(src: &str) -> Option<Layer> {
    let bytes = src.as_bytes();
    let mut out = LayerBuilder::new(src);
    let (mut pos, mut copied_up_to) = (0, 0);
    let mut changed = false;
    while let Some(off) = memchr::memchr3(b'%', b'\\', b'&', &bytes[pos..]) {
        let at = pos + off;
        match decode_escape(&bytes[at..]) {
            Some((c, len)) => {
                out.copy(copied_up_to..at);
                out.decoded(c, at..at + len);
                copied_up_to = at + len;
                pos = at + len;
                changed = true;
            }
            None => pos = at + 1,
        }
    }
    if !changed {
        return None;
    }
    out.copy(copied_up_to..src.len());
    Some(out.finish(Vec::new()))
}

/// Decodes the escape at the start of `b`: the character and the escape's
/// length in bytes. Percent and `\x` escapes are only decoded to ASCII so the
/// view stays valid UTF-8 without reassembling multi-byte sequences.
fn decode_escape(b: &[u8]) -> Option<(char, usize)> {
    match *b.first()? {
        b'%' => Some((ascii(hex_value(b.get(1..3)?)?)?, 3)),
        b'\\' => match *b.get(1)? {
            b'\\' => Some(('\\', 2)),
            b'"' => Some(('"', 2)),
            b'\'' => Some(('\'', 2)),
            b'/' => Some(('/', 2)),
            b'n' => Some(('\n', 2)),
            b'r' => Some(('\r', 2)),
            b't' => Some(('\t', 2)),
            b'x' => Some((ascii(hex_value(b.get(2..4)?)?)?, 4)),
            b'u' if b.get(2) == Some(&b'{') => {
                let close = b.iter().take(10).position(|&c| c == b'}')?;
                let c = char::from_u32(hex_value(b.get(3..close)?)?)?;
                Some((c, close + 1))
            }
            b'u' => Some((char::from_u32(hex_value(b.get(2..6)?)?)?, 6)),
            _ => None,
        },
        b'&' => decode_entity(b),
        _ => None,
    }
}

fn decode_entity(b: &[u8]) -> Option<(char, usize)> {
    const NAMED: [(&[u8], char); 5] =
        [(b"&quot;", '"'), (b"&apos;", '\''), (b"&amp;", '&'), (b"&lt;", '<'), (b"&gt;", '>')];
    if let Some((name, c)) = NAMED.iter().find(|(name, _)| b.starts_with(name)) {
        return Some((*c, name.len()));
    }
    if b.get(1) != Some(&b'#') {
        return None;
    }
    let close = b.iter().take(9).position(|&c| c == b';')?;
    let body = b.get(2..close)?;
    let value = match body.first()? {
        b'x' | b'X' => hex_value(body.get(1..)?)?,
        _ => std::str::from_utf8(body).ok()?.parse().ok()?,
    };
    Some((ascii(value)?, close + 1))
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
}

fn ascii(value: u32) -> Option<char> {
    (1..0x80).contains(&value).then(|| char::from(value as u8))
}

/// Characters that can make up a token (passwords included); a newline between
/// two of them may be a wrapped secret.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'+' | b'/' | b'=' | b'.' | b'~' | b'!' | b'@' | b'#' | b'$' | b'%' | b'^' | b'&' | b'*'
        )
}

/// Removes line breaks that sit inside what looks like one wrapped token, so
/// `sk-ant-api03-AbCd\nEfGh…` is seen whole. `None` when nothing was joined.
fn join_wrapped_tokens(src: &str) -> Option<Layer> {
    let bytes = src.as_bytes();
    let mut out = LayerBuilder::new(src);
    let mut copied_up_to = 0;
    let mut joins = Vec::new();
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let brk = if nl > 0 && bytes[nl - 1] == b'\r' { nl - 1 } else { nl };
        if brk < copied_up_to {
            continue;
        }
        let before = bytes[copied_up_to..brk].iter().rev().take_while(|&&b| is_token_byte(b)).count();
        let after = bytes[nl + 1..].iter().take_while(|&&b| is_token_byte(b)).count();
        let prev = &bytes[brk - before..brk];
        let next = &bytes[nl + 1..nl + 1 + after];
        let follows = bytes.get(nl + 1 + after).copied();
        if looks_wrapped(prev, next, follows) {
            out.copy(copied_up_to..brk);
            copied_up_to = nl + 1;
            joins.push(out.text.len());
        }
    }
    if joins.is_empty() {
        return None;
    }
    out.copy(copied_up_to..src.len());
    Some(out.finish(joins))
}

/// Whether `prev` (end of one line) and `next` (start of the following one)
/// plausibly are two halves of one token, as opposed to two words, or a value
/// followed by the next `KEY=value` / `key: value` line of a config dump.
fn looks_wrapped(prev: &[u8], next: &[u8], follows: Option<u8>) -> bool {
    if prev.is_empty() || next.is_empty() || prev.len() + next.len() < 12 {
        return false;
    }
    let starts_entry = next[0].is_ascii_alphabetic() || next[0] == b'_';
    if starts_entry {
        if follows == Some(b':') {
            return false;
        }
        let key_len =
            next.iter().take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')).count();
        if next.get(key_len) == Some(&b'=') && next.get(key_len + 1).is_some_and(|&b| b != b'=') {
            return false;
        }
    }
    let joined = || prev.iter().chain(next.iter());
    let digit = joined().any(u8::is_ascii_digit);
    let mixed = joined().any(u8::is_ascii_uppercase) && joined().any(u8::is_ascii_lowercase);
    let symbol = joined()
        .any(|b| matches!(b, b'_' | b'-' | b'+' | b'/' | b'~' | b'!' | b'@' | b'#' | b'$' | b'%' | b'^' | b'&' | b'*'));
    digit || mixed || symbol
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> (String, Views) {
        let views = Views::new(text);
        let last = views.targets(text)[0].text.to_owned();
        (last, views)
    }

    #[test]
    fn percent_and_json_escapes_decode_and_map_back() {
        let text = r#"x=postgres%3A%2F%2Fu%3Apw%40h and {\\\"k\\\":\\\"v\\u002dw\\\"}"#;
        let (view, views) = decoded(text);
        assert_eq!(view, r#"x=postgres://u:pw@h and {"k":"v-w"}"#);
        let pw = view.find("pw").expect("pw");
        let back = views.to_original(views.decoded - 1, pw..pw + 2);
        assert_eq!(&text[back], "pw");
        let vw = view.find("v-w").expect("v-w");
        let back = views.to_original(views.decoded - 1, vw..vw + 3);
        assert_eq!(&text[back], r"v\\u002dw");
    }

    #[test]
    fn wrapped_token_joins_but_prose_and_config_lines_do_not() {
        let text = "key sk-ant-api03-AbCd\r\nEfGh1234 end\nof line\nDB_USER=x\nDB_PASSWORD=y";
        let views = Views::new(text);
        let targets = views.targets(text);
        let joined = targets[1].text;
        let layer = targets[1].layer.expect("joined layer");
        assert_eq!(joined, "key sk-ant-api03-AbCdEfGh1234 end\nof line\nDB_USER=x\nDB_PASSWORD=y");
        let s = joined.find("sk-").expect("token");
        let back = views.to_original(layer, s..s + 25);
        assert_eq!(&text[back], "sk-ant-api03-AbCd\r\nEfGh1234");
    }

    #[test]
    fn plain_text_has_no_views() {
        let text = "nothing to see here\njust prose";
        let views = Views::new(text);
        let targets = views.targets(text);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].windows, whole(text));
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn windows_widen_to_words_merge_and_fall_back_to_full() {
        let text = format!("{} needle {}", "word ".repeat(200), "word ".repeat(200));
        let at = text.find("needle").expect("needle");
        let w = windows(&text, std::iter::once(at..at + 6), 10);
        assert_eq!(w.len(), 1);
        assert!(w[0].start <= at - 10 && w[0].end >= at + 16);
        assert!(text.as_bytes()[w[0].start - 1].is_ascii_whitespace());
        let all = windows(&text, [0..1, text.len() - 1..text.len()].into_iter(), 600);
        assert_eq!(all, whole(&text));
    }
}
