"""Model cards of distilled students, one module per job (the public names are re-exported by `hf_kd.model_card`).

- `schema`: [`DistillationResults`], the results JSON and its checks (no torch, no huggingface_hub);
- `markdown`: numbers, links and sentences of a card;
- `render`: metadata, model-index and the Jinja template through `huggingface_hub.ModelCard`;
- `trainer`: what a `DistillationTrainer` records, and the card it writes on save;
- `cli`: `hf-kd card`.

Nothing is imported here, so `hf_kd.cards.schema` loads without huggingface_hub.
"""
