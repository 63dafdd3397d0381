"""The model zoo and its evaluators: training and storing the auxiliary and judge
models with their roles (`store`), the pretrained ones converted from PyPI wheels
(`pretrained`), the zoo's report (`report`), one interface for every judge (`evaluators`),
scoring any transform against a pool of them (`pool`), and advantage over noise
(`advantage`)."""
