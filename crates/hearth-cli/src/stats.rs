//! Speed and memory figures printed after generation, like mlx_lm.generate's.

use hearth_runtime::Completion;

pub use hearth_train::peak_rss_bytes;

pub fn print(g: &Completion) {
    let computed = g.usage.prompt_tokens - g.usage.cached_tokens;
    let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    eprintln!("==========");
    eprintln!(
        "Prompt: {} tokens ({} cached), {:.1} tokens-per-sec",
        g.usage.prompt_tokens,
        g.usage.cached_tokens,
        rate(computed, g.prompt_secs)
    );
    eprintln!("Generation: {} tokens, {:.1} tokens-per-sec", g.tokens.len(), rate(g.tokens.len(), g.generate_secs));
    match peak_rss_bytes() {
        Some(b) => eprintln!("Peak memory: {:.3} GB", b as f64 / 1e9),
        None => eprintln!("Peak memory: unknown on this platform"),
    }
}
