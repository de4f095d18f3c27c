//! Stop strings found across token boundaries: text is released only once no stop string can
//! still begin inside it, so a stream never shows any part of one.

/// How many bytes at the end of `text` could begin `marker` (a proper prefix of it): text a
/// stream holds back until what follows shows whether the marker is there.
pub fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released: it may be the start of a stop string.
    pending: String,
    /// Whether a stop string was completed.
    hit: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops, pending: String::new(), hit: false }
    }

    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Adds text; returns what can be released now and whether a stop string was completed.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.hit {
            return (String::new(), true);
        }
        self.pending.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(at);
            self.hit = true;
            return (self.release(self.pending.len()), true);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let held = self.stops.iter().map(|s| partial_suffix(&self.pending, s)).max().unwrap_or(0);
        (self.release(self.pending.len() - held), false)
    }

    fn release(&mut self, n: usize) -> String {
        self.pending.drain(..n).collect()
    }

    /// Releases whatever is held back (generation ended without completing a stop string).
    pub fn finish(&mut self) -> String {
        let n = self.pending.len();
        self.release(n)
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    #[test]
    fn stop_strings_match_across_pieces_and_never_leak() {
        let mut m = StopMatcher::new(vec!["</end>".to_string(), "STOP".to_string()]);
        let mut seen = String::new();
        for piece in ["Hello </", "en", "d> world"] {
            let (out, hit) = m.push(piece);
            seen += &out;
            if hit {
                break;
            }
        }
        assert_eq!(seen, "Hello ");
        assert_eq!(m.finish(), "", "nothing of the stop string is held back");
        assert!(m.hit());
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".to_string()]);
        let mut released = String::new();
        for (piece, out) in [("abc ST", "abc "), ("AY", "STAY"), ("ST", "")] {
            let (got, _) = m.push(piece);
            assert_eq!(got, out);
            released += &got;
        }
        assert_eq!(m.finish(), "ST");
        assert_eq!(released + "ST", "abc STAYST");
    }
}
