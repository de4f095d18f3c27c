//! KV caches of finished sequences, kept so that a request sharing a prefix with an earlier
//! one (the next turn of a chat) prefills only what is new. Bounded by bytes, LRU eviction.
//! An entry is only reused by a request with the same adapter: the keys and values it holds
//! were computed with that adapter's deltas.

use hearth_engine::KvCache;

struct Entry {
    tokens: Vec<u32>,
    /// The adapter's id, if the sequence ran with one.
    adapter: Option<u64>,
    cache: KvCache,
    /// The logits after the entry's prompt (its first `.0` tokens): a request repeating that
    /// prompt exactly starts sampling at once, with the very numbers the first one had.
    prompt_logits: Option<(usize, Vec<f32>)>,
    last_used: u64,
}

pub struct PromptCache {
    entries: Vec<Entry>,
    limit_bytes: usize,
    clock: u64,
}

/// A cache taken out for reuse: its first `reused` tokens equal the new prompt's; `logits`
/// when the whole prompt was there.
pub struct Hit {
    pub cache: KvCache,
    pub reused: usize,
    pub logits: Option<Vec<f32>>,
}

impl PromptCache {
    pub fn new(limit_bytes: usize) -> Self {
        PromptCache { entries: Vec::new(), limit_bytes, clock: 0 }
    }

    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.cache.bytes()).sum()
    }

    /// Removes and returns the entry of `adapter` sharing the longest prefix with `prompt`,
    /// truncated to that prefix — at most `prompt.len() - 1` tokens, since one must run to
    /// give logits.
    pub fn take(&mut self, prompt: &[u32], adapter: Option<u64>) -> Option<Hit> {
        let common = |e: &Entry| {
            if e.adapter != adapter {
                return 0;
            }
            e.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count()
        };
        let (at, len) = self.entries.iter().enumerate().map(|(i, e)| (i, common(e))).max_by_key(|&(_, n)| n)?;
        let exact = matches!(&self.entries[at].prompt_logits, Some((n, _)) if *n == prompt.len() && len >= *n);
        let reused = if exact { prompt.len() } else { len.min(prompt.len().saturating_sub(1)) };
        if reused == 0 {
            return None;
        }
        let mut entry = self.entries.swap_remove(at);
        entry.cache.truncate(reused);
        let logits = entry.prompt_logits.filter(|_| exact).map(|(_, l)| l);
        Some(Hit { cache: entry.cache, reused, logits })
    }

    /// Keeps a sequence's cache (`tokens` are what it holds), evicting the least recently used
    /// entries beyond the byte limit, and any entry the new one extends.
    pub fn insert(&mut self, tokens: Vec<u32>, adapter: Option<u64>, cache: KvCache, prompt_logits: Option<(usize, Vec<f32>)>) {
        if cache.bytes() > self.limit_bytes || tokens.is_empty() {
            return;
        }
        self.entries.retain(|e| e.adapter != adapter || !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry { tokens, adapter, cache, prompt_logits, last_used: self.clock });
        while self.bytes() > self.limit_bytes {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i);
            match oldest {
                Some(i) => drop(self.entries.swap_remove(i)),
                None => break,
            }
        }
    }
}
