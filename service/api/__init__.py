"""The HTTP edge: routes, request and response bodies, errors in OpenAI's shape, limits, auth, the h11
protocol, metrics, and what keeps server paths out of answers."""
