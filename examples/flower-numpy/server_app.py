"""flower-numpy: A Flower / NumPy app (ServerApp, written for newest Flower; only `flwr` -> `fl_async`)."""

import numpy as np
from task import get_model_params

from fl_async.app import ArrayRecord, ConfigRecord, Context
from fl_async.serverapp import Grid, ServerApp
from fl_async.serverapp.strategy import FedAvg

# Create ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp."""

    # Read run config
    fraction_train: float = context.run_config.get("fraction-train", 1.0)
    num_rounds: int = context.run_config.get("num-server-rounds", 3)
    lr: float = context.run_config.get("lr", 0.1)

    # Load global model
    arrays = ArrayRecord(get_model_params())

    # Initialize FedAvg strategy
    strategy = FedAvg(fraction_train=fraction_train)

    # Start strategy, run FedAvg for `num_rounds`
    result = strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
    )

    # Save final model to disk
    print("\nSaving final model to disk...")
    ndarrays = result.arrays.to_numpy_ndarrays()
    np.savez(context.run_config.get("output", "final_model.npz"), *ndarrays)
    for server_round, metrics in result.evaluate_metrics_clientapp.items():
        print(f"round {server_round}: eval_loss {metrics['eval_loss']:.4f}")
