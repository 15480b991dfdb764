"""Everything kit asks of Kaggle: the client (credentials, retries, errors), downloads, submissions, kernels."""
