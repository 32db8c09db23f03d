"""The gradient learner of ERL: TD3 or DDPG on one shared replay buffer.

`ReplayBuffer` holds transitions (observation, action, reward, next observation) from everyone
who acts: every member of the population and the learner itself. `Learner` is an actor (the same
`halp.methods.erl.Actor` the policy file holds) and its critic(s):

- DDPG: one critic Q(s, a) regressed on r + gamma Q'(s', mu'(s')); the actor climbs Q(s, mu(s)).
- TD3: two critics and the smaller of their targets, a target action smoothed by clipped noise,
  and the actor updated every second critic step (Fujimoto et al., 2018).

The discount defaults to zero: an action never changes the next state (device speeds and
bandwidths move by themselves), so the value of a split is its own reward, and a bootstrapped
tail would only add noise to the critic. With no discount the critic learns the log of the cost,
-log(-reward) (rewards are minus latencies, always negative): the same best action in every
state, but a 5% worse split weighs the same in a fast state as in a slow one, where latencies are
ten times longer. Every random draw comes from the caller's generator.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from halp.methods.erl import Actor


def seeded_actor(obs_dim: int, action_dim: int, hidden: int, seed: int) -> Actor:
    """An actor whose initial weights depend on `seed` only (the global generator is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Actor(obs_dim, action_dim, hidden)


class ReplayBuffer:
    """A ring of transitions; `add` from any actor, `sample` a batch for the learner."""

    def __init__(self, obs_dim: int, action_dim: int, capacity: int = 100_000):
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.capacity = capacity
        self.size = 0
        self._at = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray) -> None:
        i = self._at
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self._at = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size, size=batch)
        return (torch.from_numpy(self.obs[idx]), torch.from_numpy(self.action[idx]),
                torch.from_numpy(self.reward[idx]).unsqueeze(1), torch.from_numpy(self.next_obs[idx]))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))


class Learner:
    """TD3 (`kind="td3"`) or DDPG (`kind="ddpg"`), acting in [0, 1]^action_dim."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, kind: str, seed: int, *,
                 devices: int | None = None, gamma: float = 0.0, lr_actor: float = 1e-3, lr_critic: float = 1e-3,
                 tau: float = 0.005, policy_noise: float = 0.1, noise_clip: float = 0.25,
                 policy_delay: int = 2):
        if kind not in ("td3", "ddpg"):
            raise ValueError(f"learner must be td3 or ddpg, not {kind!r}")
        self.kind = kind
        self.gamma, self.tau = gamma, tau
        self.log_cost = gamma == 0.0
        self.devices = devices
        self.policy_noise, self.noise_clip = policy_noise, noise_clip
        self.policy_delay = policy_delay if kind == "td3" else 1
        self.actor = seeded_actor(obs_dim, action_dim, hidden, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.critics = nn.ModuleList(Critic(obs_dim, action_dim, hidden)
                                         for _ in range(2 if kind == "td3" else 1))
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_targets = copy.deepcopy(self.critics)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=lr_critic)
        self.updates = 0

    def act(self, obs: np.ndarray, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        with torch.no_grad():
            action = self.actor(torch.from_numpy(np.asarray(obs, dtype=np.float32))).numpy()
        if noise and rng is not None:
            action = np.clip(action + noise * rng.standard_normal(action.shape), 0.0, 1.0)
        return action.astype(np.float32)

    def shares(self, action: torch.Tensor) -> torch.Tensor:
        """What the critic sees of an action: the shares it projects to (`erl.project`, in torch
        so the actor's gradient flows through), when the learner knows the device count."""
        if self.devices is None:
            return action
        a = action.reshape(action.shape[0], -1, self.devices)
        total = a.sum(dim=2, keepdim=True)
        shares = torch.where(total > 0, a / total.clamp_min(1e-9), torch.full_like(a, 1.0 / self.devices))
        return shares.reshape(action.shape)

    def train(self, buffer: ReplayBuffer, steps: int, batch: int, rng: np.random.Generator) -> float:
        """`steps` gradient steps on batches from `buffer`; the last critic loss."""
        loss = float("nan")
        for _ in range(steps if len(buffer) else 0):
            obs, action, reward, next_obs = buffer.sample(batch, rng)
            loss = self._critic_step(obs, action, reward, next_obs, rng)
            self.updates += 1
            if self.updates % self.policy_delay == 0:
                self._actor_step(obs)
        return loss

    def _critic_step(self, obs, action, reward, next_obs, rng: np.random.Generator) -> float:
        with torch.no_grad():
            target = -torch.log((-reward).clamp_min(1e-9)) if self.log_cost else reward
            if self.gamma:
                next_action = self.actor_target(next_obs)
                if self.kind == "td3":
                    noise = torch.from_numpy(rng.standard_normal(next_action.shape).astype(np.float32))
                    noise = (noise * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
                    next_action = (next_action + noise).clamp(0.0, 1.0)
                tail = torch.min(torch.cat([q(next_obs, self.shares(next_action)) for q in self.critic_targets], 1),
                                 dim=1, keepdim=True).values
                target = reward + self.gamma * tail
        shares = self.shares(action)
        losses = [nn.functional.mse_loss(q(obs, shares), target) for q in self.critics]
        loss = torch.stack(losses).sum()
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        return loss.item()

    def _actor_step(self, obs: torch.Tensor) -> None:
        value = self.critics[0](obs, self.shares(self.actor(obs))).mean()
        self.actor_opt.zero_grad()
        (-value).backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critics, self.critic_targets)):
                for p, t in zip(net.parameters(), target.parameters(), strict=True):
                    t.mul_(1.0 - self.tau).add_(self.tau * p)
