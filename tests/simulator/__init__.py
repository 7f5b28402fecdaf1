"""Tests for the simulated Twilio caller."""
