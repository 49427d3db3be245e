//! Cutting streamed tool-argument JSON only where a partial-JSON parser can read it.
//!
//! Kiro's tool fragments are raw slices of the argument text and may end right after a
//! backslash, inside a `\uXXXX` escape or between the two halves of a surrogate pair. Clients
//! that parse `partial_json` as it accumulates (the anthropic SDK does) can choke on such a cut,
//! so [`SafeJsonSplitter`] holds back the few bytes of an unfinished escape until the next
//! fragment completes it. Concatenating what it emits (plus [`SafeJsonSplitter::finish`]) gives
//! back the input exactly.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Outside,
    InString,
    /// just after a backslash
    Escape,
    /// inside `\u`, with this many hex digits read and their value so far
    Unicode(u8, u32),
    /// a high surrogate escape is complete; its low half must follow: `\`, `u`, 4 hex
    AwaitLow(u8),
}

impl State {
    fn safe(self) -> bool {
        matches!(self, State::Outside | State::InString)
    }

    fn step(self, c: char) -> State {
        match self {
            State::Outside => {
                if c == '"' {
                    State::InString
                } else {
                    State::Outside
                }
            }
            State::InString => match c {
                '\\' => State::Escape,
                '"' => State::Outside,
                _ => State::InString,
            },
            State::Escape => {
                if c == 'u' {
                    State::Unicode(0, 0)
                } else {
                    State::InString
                }
            }
            State::Unicode(n, v) => match c.to_digit(16) {
                Some(d) if n == 3 => {
                    let v = v * 16 + d;
                    if (0xD800..0xDC00).contains(&v) {
                        State::AwaitLow(0)
                    } else {
                        State::InString
                    }
                }
                Some(d) => State::Unicode(n + 1, v * 16 + d),
                None => State::InString, // malformed: stop holding back
            },
            State::AwaitLow(n) => match (n, c) {
                (0, '\\') => State::AwaitLow(1),
                (1, 'u') => State::AwaitLow(2),
                (2..=4, c) if c.is_ascii_hexdigit() => State::AwaitLow(n + 1),
                (5, c) if c.is_ascii_hexdigit() => State::InString,
                // not a low surrogate after all: treat as ordinary string content
                (_, '"') => State::Outside,
                (_, '\\') => State::Escape,
                _ => State::InString,
            },
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct SafeJsonSplitter {
    held: String,
    /// state at the start of `held`
    state: State,
}

impl SafeJsonSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a fragment; returns what can be emitted now (possibly empty).
    pub fn push(&mut self, fragment: &str) -> String {
        self.held.push_str(fragment);
        let mut st = self.state;
        let mut cut = 0;
        let mut cut_state = st;
        for (i, c) in self.held.char_indices() {
            st = st.step(c);
            if st.safe() {
                cut = i + c.len_utf8();
                cut_state = st;
            }
        }
        self.state = cut_state;
        let rest = self.held.split_off(cut);
        std::mem::replace(&mut self.held, rest)
    }

    /// Whatever is still held (the end of the arguments).
    pub fn finish(&mut self) -> String {
        self.state = State::Outside;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_emits_a_cut_inside_an_escape_and_loses_nothing() {
        let text = r#"{"a":"x\"y\\z\u00e9\ud83d\ude00 end","b":[1,2]}"#;
        for step in 1..=text.len() {
            let mut s = SafeJsonSplitter::new();
            let mut out = String::new();
            let mut i = 0;
            while i < text.len() {
                let mut j = (i + step).min(text.len());
                while !text.is_char_boundary(j) {
                    j += 1;
                }
                let piece = s.push(&text[i..j]);
                // every emitted prefix ends in a readable place
                out.push_str(&piece);
                let mut st = State::Outside;
                for c in out.chars() {
                    st = st.step(c);
                }
                assert!(st.safe(), "step {step}: unsafe cut after {out:?}");
                i = j;
            }
            out.push_str(&s.finish());
            assert_eq!(out, text, "step {step}");
        }
    }
}
