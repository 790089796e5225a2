"""The adapter core shared by the vLLM, SGLang and TGI adapters.

An adapter is this core plus one `Translation` for its engine; see `translation.py`.
"""
