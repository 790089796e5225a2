"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) at the edge.

Bodies are validated in Anthropic's shapes (`schemas`), translated onto OpenAI's chat
request and from there onto the contract with every check the chat route makes
(`convert`), served by the pipeline every generating API shares, and answered in
Anthropic's shapes (`encoding`) and errors (`errors`).
"""
