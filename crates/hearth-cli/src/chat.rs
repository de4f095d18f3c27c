use std::io::{BufRead, Write};

use anyhow::Context;
use clap::Args;
use hearth_tokenizer::RenderOptions;
use serde_json::{json, Value};

use crate::ModelArgs;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// System message for the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Print speed figures after each reply.
    #[arg(long)]
    verbose: bool,
}

/// A multi-turn REPL. Each turn renders the whole conversation, and the runtime reuses the KV
/// cache of everything already seen, so only the new turn is prefilled.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let template = model.chat_template.as_ref().context("this model has no chat template; use `hearth generate --raw`")?;
    let mut runtime = args.model.runtime(&model);
    let params = args.model.params(&model);
    let system: Vec<Value> = args.system.iter().map(|s| json!({"role": "system", "content": s})).collect();
    let mut messages = system.clone();
    eprintln!("Chatting with {} — /reset starts over, /exit or Ctrl-D quits.", model.path.display());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!(">> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next().transpose()? else { break };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = system.clone();
                continue;
            }
            _ => {}
        }
        messages.push(json!({"role": "user", "content": line}));
        let text = template.render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
        let prompt = model.tokenizer.encode(&text, false)?;
        let mut out = std::io::stdout().lock();
        let request = hearth_runtime::Request::new(prompt, params.clone());
        let result = runtime.complete(request, |text| out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok());
        writeln!(out)?;
        match result {
            Ok(g) => {
                if args.verbose {
                    crate::stats::print(&g);
                }
                messages.push(json!({"role": "assistant", "content": g.text}));
            }
            Err(e) => {
                // The turn is dropped, the conversation goes on.
                messages.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}
