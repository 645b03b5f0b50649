"""What operators see: trace events in Cloudflare's tail format and the tail API (`tail`,
`tail_api`), request ids and trace context carried across hops (`tracing`), process logs
(`logs`)."""
