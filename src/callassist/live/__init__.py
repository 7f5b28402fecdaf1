"""OpenAI GPT-Live specifics the Live engine uses: the session's start, its socket, its billing."""
