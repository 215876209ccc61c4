"""Text parts: tokenizers, embeddings, sequence models, transformers and BERT-style training."""
