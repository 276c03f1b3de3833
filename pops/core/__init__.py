"""The algorithm, one screen each: the operator network and its two layouts (`prior`), the training objectives
(`objective`), the samplers (`sampler`), and the one `SamplingConfig` every call carries (`sampling`)."""
