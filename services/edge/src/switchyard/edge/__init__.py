"""The Switchyard edge: the OpenAI-compatible front door to the inference adapters."""
