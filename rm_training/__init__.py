"""Reward-model training for reward-guided decoding: full-sequence (Eq. 1) and partial-sequence (Eq. 5)
Bradley-Terry models, through TRL's RewardTrainer, optionally under DeepSpeed ZeRO-3."""
