"""Fine-tuning pretrained models: sequence classification with the Hugging Face Trainer (L16)."""
