"""The Switchyard adapter for SGLang: the inference contract in front of SGLang's HTTP API."""
