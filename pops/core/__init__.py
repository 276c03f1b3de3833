"""The algorithm, one screen each: the operator network and its two layouts (`prior`), the training objectives
(`objective`), and the samplers with the one `SamplingConfig` every call carries (`sampler`)."""
