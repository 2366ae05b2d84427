"""The one loop: clocked tick, stages, worker threads and the bounded queues between them."""
