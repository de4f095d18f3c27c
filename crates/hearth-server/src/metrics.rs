//! Prometheus metrics, rendered in the text exposition format. Counters and histograms are
//! updated where things happen; gauges (queues, sequences, memory) are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hearth_embed::QueueStats;
use hearth_runtime::{Gauges, Observer};

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Per-token work (a constraint's mask) takes microseconds to milliseconds.
const MICRO_BUCKETS: &[f64] = &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What a scrape reports about one resident model.
pub struct ResidentSnapshot<'a> {
    pub id: &'a str,
    pub weight_bytes: usize,
    pub gauges: &'a Gauges,
}

/// A metric's name, help text, and how to read it from a `T`.
type Sample<T, V> = (&'static str, &'static str, fn(&T) -> V);

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    /// Time a constraint took to mask one position.
    pub constraint_mask: Histogram,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_cache_hits: AtomicU64,
    pub prompt_cache_tokens: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            time_to_first_token: Histogram::new(LATENCY_BUCKETS),
            inter_token_latency: Histogram::new(LATENCY_BUCKETS),
            constraint_mask: Histogram::new(MICRO_BUCKETS),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            prompt_cache_hits: AtomicU64::new(0),
            prompt_cache_tokens: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route.to_string(), status)).or_default() += 1;
    }

    /// `embedding_queues`: each loaded embedding model's id and batching-queue counters.
    pub fn render(&self, residents: &[ResidentSnapshot<'_>], embedding_queues: &[(String, QueueStats)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP hearth_requests_total HTTP requests by route and status.\n# TYPE hearth_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "hearth_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        self.time_to_first_token.render(
            &mut out,
            "hearth_time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
        );
        self.inter_token_latency.render(&mut out, "hearth_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.");
        self.constraint_mask.render(&mut out, "hearth_constraint_mask_seconds", "Time a constraint took to mask one token's logits.");
        let counters = [
            ("hearth_prompt_tokens_total", "Prompt tokens received.", &self.prompt_tokens),
            ("hearth_generated_tokens_total", "Tokens generated.", &self.generated_tokens),
            ("hearth_prompt_cache_hits_total", "Requests that reused a cached prompt prefix.", &self.prompt_cache_hits),
            ("hearth_prompt_cache_tokens_total", "Prompt tokens served from the prompt cache.", &self.prompt_cache_tokens),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let gauges: [Sample<ResidentSnapshot<'_>, usize>; 5] = [
            ("hearth_queue_depth", "Requests waiting for a model's scheduler.", |r| r.gauges.queued.load(Relaxed)),
            ("hearth_running_sequences", "Sequences in a model's running batch.", |r| r.gauges.running.load(Relaxed)),
            ("hearth_kv_cache_bytes", "KV-cache bytes reserved by running sequences.", |r| r.gauges.kv_running_bytes.load(Relaxed)),
            ("hearth_prompt_cache_bytes", "KV-cache bytes kept by the prompt cache.", |r| r.gauges.kv_prompt_cache_bytes.load(Relaxed)),
            ("hearth_model_weight_bytes", "Weight bytes of each resident model.", |r| r.weight_bytes),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for r in residents {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(r.id), get(r));
            }
        }
        let queue_counters: [Sample<QueueStats, u64>; 3] = [
            ("hearth_embedding_requests_total", "Embedding requests queued per model.", |s| s.requests),
            ("hearth_embedding_batches_total", "Embedding model runs per model.", |s| s.batches),
            ("hearth_embedding_merged_batches_total", "Embedding model runs that served several requests at once.", |s| s.merged_batches),
        ];
        for (name, help, get) in queue_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (id, stats) in embedding_queues {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(id), get(stats));
            }
        }
        let _ = writeln!(
            out,
            "# HELP hearth_resident_models Models loaded now.\n# TYPE hearth_resident_models gauge\nhearth_resident_models {}",
            residents.len()
        );
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The runtime's reports, counted where a scrape reads them.
impl Observer for Metrics {
    fn prompt(&self, tokens: usize, cached: usize) {
        self.prompt_tokens.fetch_add(tokens as u64, Relaxed);
        if cached > 0 {
            self.prompt_cache_hits.fetch_add(1, Relaxed);
            self.prompt_cache_tokens.fetch_add(cached as u64, Relaxed);
        }
    }

    fn first_token(&self, latency: Duration) {
        self.time_to_first_token.observe(latency);
    }

    fn next_token(&self, gap: Duration) {
        self.inter_token_latency.observe(gap);
    }

    fn generated(&self) {
        self.generated_tokens.fetch_add(1, Relaxed);
    }

    fn processed(&self, took: Duration) {
        self.constraint_mask.observe(took);
    }
}
