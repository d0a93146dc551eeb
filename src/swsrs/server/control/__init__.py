"""The control plane: the admin API and its OIDC check, CORS and Origin policy, static assets."""
