//! Tool calls and reasoning in a chat model's own words. Each model family writes a tool call
//! its own way ([`Format`], read from the chat template); a request's tools become a grammar
//! the output must follow ([`Format::grammar`]), so every call's arguments parse and validate;
//! and the output, whole or as it streams, is split back into reasoning, text and calls
//! ([`Reader`]). Templates that know nothing of tools get them described in a system message
//! and their calls written as text ([`prepare_messages`]).

mod format;
mod messages;
mod reader;
mod scan;

pub use format::{no_parameters, Format};
pub use messages::{prepare_messages, MessageError};
pub use reader::{Delta, Reader, Reasoning, Reply};

use serde_json::Value as Json;

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of its arguments (an object).
    pub parameters: Json,
}

impl Tool {
    /// As OpenAI's API and transformers' templates describe it.
    pub fn to_openai(&self) -> Json {
        let mut function = serde_json::json!({"name": self.name});
        if let Some(d) = &self.description {
            function["description"] = d.clone().into();
        }
        function["parameters"] = self.parameters.clone();
        serde_json::json!({"type": "function", "function": function})
    }
}

/// Which calls the reply must make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Text, or calls: the model decides; once it starts a call, the call is constrained.
    Auto,
    /// At least one call, from the first token.
    Required,
    /// One call of this function.
    Function(String),
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON object's text.
    pub arguments: String,
}
