"""SMTP ingress: accepts mail and answers 250 only once JetStream stored it."""
