"""What engines answer, as their sources define it, for tests that need an engine's reply without the engine."""

# TGI 3.3's GET /info (router/src/lib.rs, struct Info) for the settings in tgi.env.
TGI_INFO = {
    "model_id": "Qwen/Qwen2.5-7B-Instruct",
    "model_sha": None,
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 8,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 6144,
    "max_total_tokens": 8192,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.7",
    "sha": None,
    "docker_label": None,
}
