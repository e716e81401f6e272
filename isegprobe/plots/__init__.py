"""Pictures of what the features and the probes do: mIoU against clicks, and features before and after upsampling."""
