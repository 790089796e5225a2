"""The Switchyard adapter for TGI: the inference contract in front of TGI's HTTP API."""
