//! A small curated catalogue of recommended models, with short aliases. Static: listing it
//! needs no network.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseCase {
    Chat,
    Coding,
    Embedding,
}

impl UseCase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Coding => "coding",
            Self::Embedding => "embedding",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CatalogueEntry {
    pub alias: &'static str,
    /// A [`ModelSpec`](crate::name::ModelSpec): repo id, plus `:QUANT` for GGUF repos.
    pub spec: &'static str,
    pub use_case: UseCase,
    /// The smallest machine (GB of memory) it is recommended for.
    pub memory_gb: u32,
    pub description: &'static str,
}

const fn entry(alias: &'static str, spec: &'static str, use_case: UseCase, memory_gb: u32, description: &'static str) -> CatalogueEntry {
    CatalogueEntry { alias, spec, use_case, memory_gb, description }
}

pub const CATALOGUE: &[CatalogueEntry] = &[
    entry("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1", UseCase::Chat, 1, "tiny chat model for tests and any machine"),
    entry("llama3.2-3b", "mlx-community/Llama-3.2-3B-Instruct-4bit", UseCase::Chat, 8, "small general chat"),
    entry("qwen2.5-7b", "mlx-community/Qwen2.5-7B-Instruct-4bit", UseCase::Chat, 8, "general chat, 8 GB machines"),
    entry("llama3.1-8b", "mlx-community/Meta-Llama-3.1-8B-Instruct-4bit", UseCase::Chat, 8, "general chat, 8 GB machines"),
    entry("qwen2.5-14b", "mlx-community/Qwen2.5-14B-Instruct-4bit", UseCase::Chat, 16, "general chat, 16 GB machines"),
    entry("gemma2-9b", "mlx-community/gemma-2-9b-it-4bit", UseCase::Chat, 16, "general chat, 16 GB machines"),
    entry("qwen2.5-32b", "mlx-community/Qwen2.5-32B-Instruct-4bit", UseCase::Chat, 32, "strong chat, 32 GB machines"),
    entry("qwen2.5-coder-7b", "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", UseCase::Coding, 8, "code completion and chat"),
    entry("qwen2.5-coder-14b", "mlx-community/Qwen2.5-Coder-14B-Instruct-4bit", UseCase::Coding, 16, "code, 16 GB machines"),
    entry("qwen2.5-coder-32b", "mlx-community/Qwen2.5-Coder-32B-Instruct-4bit", UseCase::Coding, 32, "code, 32 GB machines"),
    entry("minilm", "sentence-transformers/all-MiniLM-L6-v2", UseCase::Embedding, 1, "fast 384-d sentence embeddings"),
    entry("bge-small", "BAAI/bge-small-en-v1.5", UseCase::Embedding, 1, "384-d English embeddings"),
    entry("bge-m3", "BAAI/bge-m3", UseCase::Embedding, 4, "1024-d multilingual embeddings"),
    entry(
        "qwen3-embedding-0.6b-4bit",
        "mlx-community/Qwen3-Embedding-0.6B-4bit-DWQ",
        UseCase::Embedding,
        2,
        "1024-d multilingual embeddings, 32k tokens, last-token pooling, query instruction prompt (~350 MB)",
    ),
    entry(
        "embeddinggemma-300m-4bit",
        "mlx-community/embeddinggemma-300m-4bit",
        UseCase::Embedding,
        1,
        "768-d embeddings (Matryoshka 512/256/128), 2k tokens, query/document prompts (~200 MB)",
    ),
];

/// The catalogue entry for an alias (case-insensitive).
pub fn lookup(alias: &str) -> Option<&'static CatalogueEntry> {
    CATALOGUE.iter().find(|e| e.alias.eq_ignore_ascii_case(alias))
}

/// The repo id an alias stands for, else `spec` itself: one name for one model wherever it
/// is recorded (a knowledge base remembers the embedding model that built it).
pub fn canonical(spec: &str) -> &str {
    lookup(spec).map_or(spec, |e| e.spec)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_entry_is_a_valid_spec_with_a_unique_alias() {
        for (i, e) in super::CATALOGUE.iter().enumerate() {
            crate::name::ModelSpec::parse(e.spec).unwrap();
            assert!(super::CATALOGUE[..i].iter().all(|o| o.alias != e.alias), "duplicate alias {}", e.alias);
        }
        assert_eq!(super::lookup("SmolLM2").unwrap().spec, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1");
    }
}
