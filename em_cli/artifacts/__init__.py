"""The artifact contract: every file kind `em` reads or writes is defined in this package.

- `jsonl`: JSONL record files (chat examples, questions, responses, judgements).
- `tensors`: safetensors files with string metadata (activations, directions, vectors).
- `manifest`: the JSON manifest written beside each output.
- `atomic`: temp-file-and-rename writes shared by all of the above.

See docs/FORMATS.md for the user-facing description.
"""
