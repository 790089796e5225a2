"""The Switchyard adapter for vllm."""
