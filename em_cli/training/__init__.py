"""Finetuning model organisms (`em finetune`): LoRA, rank-1, steering vectors, full, with KL."""
