"""Media legs: the caller's side of a call (Twilio Media Streams today), behind one protocol."""
