"""Model engines: the assistant's side of a call (OpenAI Realtime today), behind one protocol."""
