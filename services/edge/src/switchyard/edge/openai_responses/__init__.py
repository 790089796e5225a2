"""OpenAI's Responses API (`/v1/responses`): stored, chained and background responses."""
