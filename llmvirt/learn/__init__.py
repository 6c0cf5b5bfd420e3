"""Learning: training every head and the learned balance policy, fine-tuning from outcomes, evaluation for
promotion. Only the CLI and benchmarks import it; nothing on the decision path does."""
