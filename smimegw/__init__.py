"""smimegw: an S/MIME email gateway on NATS JetStream."""
