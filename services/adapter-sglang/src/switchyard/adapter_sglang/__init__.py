"""The Switchyard adapter for sglang."""
