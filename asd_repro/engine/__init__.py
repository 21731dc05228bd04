"""Training engine: data held as uint8 tensors on the training device, augmented in batches there."""
