"""`headrace up`: start, watch and stop every service and Envoy."""
