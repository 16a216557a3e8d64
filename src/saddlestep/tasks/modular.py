"""(Generalized) modular addition: cyclic shifts of a template, and its Fourier analysis."""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..models.base import AbstractModel, AbstractNeuronModel, check_positive_int
from .base import AbstractTask, check_finite
from .regression import SampleRegression

# A frequency carries signal when its power exceeds this fraction of the largest one.
_POWER_TOL = 1e-12


def fourier_template(p: int, magnitudes: Mapping[int, float]) -> np.ndarray:
    """A real, mean-zero template with |x̂[±ξ]| = magnitudes[ξ] (unnormalized DFT, `np.fft.fft`),
    built by inverse FFT as in the paper's code (Kunin et al. 2025, modular arithmetic notebook).

    **Arguments:**

    - `p`: the modulus (template length), ≥ 3.
    - `magnitudes`: {frequency ξ (1 ≤ ξ ≤ p/2): |x̂[ξ]|}.

    **Returns:** the template, shape (p,).
    """
    p = check_positive_int("p", p)
    if p < 3:
        raise ValueError(f"p: expected an integer ≥ 3, got {p}")
    spec = np.zeros(p, dtype=complex)
    for xi, mag in dict(magnitudes).items():
        if isinstance(xi, bool) or int(xi) != xi or not 1 <= int(xi) <= p // 2:
            raise ValueError(f"magnitudes: frequency {xi!r} is not an integer in 1..{p // 2}")
        mag = float(mag)
        if not (np.isfinite(mag) and mag >= 0):
            raise ValueError(f"magnitudes: |x̂[{xi}]| must be a finite number ≥ 0, got {mag!r}")
        spec[int(xi)] = spec[-int(xi)] = mag
    return np.real(np.fft.ifft(spec))


def one_hot_template(p: int) -> np.ndarray:
    """The mean-centred one-hot template e₀ − 1/p: standard modular addition (all |x̂[ξ]| = 1).

    **Arguments:** `p`, the modulus.

    **Returns:** the template, shape (p,).
    """
    p = check_positive_int("p", p)
    return np.eye(p)[0] - 1.0 / p


def frequency_power(x: Float[np.ndarray, "... p"]) -> Float[np.ndarray, "... k"]:
    """Power per frequency ξ = 0 … ⌊p/2⌋ along the last axis, ±ξ combined, normalized so that the
    powers sum to ‖x‖² (Parseval): P_ξ = (|x̂[ξ]|² + |x̂[−ξ]|²)/p, once for ξ = 0 and ξ = p/2."""
    x = np.asarray(x)
    p = x.shape[-1]
    return _power(jnp.fft.fft(x, axis=-1), p)


def _power(spec, p):
    sq = jnp.abs(spec) ** 2 / p
    half = p // 2
    pos = sq[..., : half + 1]
    neg = jnp.concatenate([jnp.zeros_like(sq[..., :1]), sq[..., : -half - 1 : -1][..., : half]], axis=-1)
    if p % 2 == 0:  # the Nyquist frequency is its own negative
        neg = neg.at[..., half].set(0.0)
    return pos + neg


class ModularAddition(AbstractTask):
    """Modular addition with a template x ∈ R^p (Kunin et al. 2025; §2.4 of the AGF reference):
    inputs (a·x, b·x) (cyclic shifts, `np.roll(x, a)`), target (a + b mod p)·x, over all p² pairs,
    L = ½ mean_{a,b} ‖y_{a+b} − f(a·x, b·x)‖². A one-hot template is standard modular addition.

    The loss splits over output frequencies (Parseval). The `"features"` observable is, for each
    frequency ξ that carries signal, the fraction of its target power that the network fits,
    1 − L_ξ(residual)/L_ξ(target), which goes from 0 to 1 when ξ is learned; `"feature_losses"`
    is L_ξ(residual) itself, so that a step is labelled by the frequency that gave up the most
    loss (a weak frequency can be fitted in passing). Also recorded:
    `"function_power"` (the power of f per output frequency ξ = 0 … ⌊p/2⌋, ½mean_ab, so that it
    sums to ½E‖f‖²) and `"neuron_power"` (Σ_i of the power of u_i, v_i, w_i per frequency).
    """

    template: Float[Array, " p"]
    X: Float[Array, "pairs 2p"]
    Y: Float[Array, "pairs p"]
    frequencies: tuple = eqx.field(static=True)

    def __init__(self, template):
        """**Arguments:**

        - `template`: x ∈ R^p (p ≥ 3); its mean is removed, as in the paper's code.
        """
        x = check_finite("template", template, 1)
        p = x.size
        if p < 3:
            raise ValueError(f"template: expected length p ≥ 3, got {p}")
        x = x - x.mean()
        power = np.asarray(frequency_power(x))
        if power.max() <= 0:
            raise ValueError("template: is constant; after removing its mean there is nothing to learn")
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        a, b = a.reshape(-1), b.reshape(-1)
        shifts = np.stack([np.roll(x, k) for k in range(p)])
        self.template = jnp.asarray(x)
        self.X = jnp.asarray(np.concatenate([shifts[a], shifts[b]], axis=1))
        self.Y = jnp.asarray(shifts[(a + b) % p])
        self.frequencies = tuple(
            int(xi) for xi in range(1, p // 2 + 1) if power[xi] > _POWER_TOL * power.max()
        )

    @property
    def p(self) -> int:
        return self.template.shape[0]

    def magnitudes(self) -> np.ndarray:
        """|x̂[ξ]| for ξ = 0 … ⌊p/2⌋ (unnormalized DFT)."""
        return np.abs(np.fft.fft(np.asarray(self.template)))[: self.p // 2 + 1]

    def outputs(self, model: AbstractModel) -> Float[Array, "pairs p"]:
        """f(a·x, b·x) for all p² pairs (row a·p + b)."""
        return jax.vmap(model)(self.X)

    def loss(self, model):
        return 0.5 * jnp.mean(jnp.sum((self.Y - self.outputs(model)) ** 2, axis=-1))

    def frequency_losses(self, model) -> Float[Array, " k"]:
        """L_ξ for ξ = 0 … ⌊p/2⌋: the loss carried by each output frequency (they sum to L)."""
        r = self.Y - self.outputs(model)
        return 0.5 * jnp.mean(_power(jnp.fft.fft(r, axis=-1), self.p), axis=0)

    def observables(self, model):
        f = self.outputs(model)
        p = self.p
        spec_y = jnp.fft.fft(self.Y, axis=-1)
        spec_f = jnp.fft.fft(f, axis=-1)
        loss_r = 0.5 * jnp.mean(_power(spec_y - spec_f, p), axis=0)
        loss_y = 0.5 * jnp.mean(_power(spec_y, p), axis=0)
        idx = jnp.asarray(self.frequencies, dtype=int)
        obs = {
            "features": 1.0 - loss_r[idx] / loss_y[idx],
            "feature_losses": loss_r[idx],
            "function_power": 0.5 * jnp.mean(_power(spec_f, p), axis=0),
        }
        if isinstance(model, AbstractNeuronModel):
            n = model.neurons()
            if all(k in n for k in ("u", "v", "w")) and n["w"].shape[-1] == p:
                obs["neuron_power"] = sum(
                    jnp.sum(_power(jnp.fft.fft(n[k], axis=-1), p), axis=0) for k in ("u", "v", "w")
                )
        return obs

    def feature_labels(self, model):
        return [f"ξ={xi}" for xi in self.frequencies]

    def validate(self, model):
        p = self.p
        try:
            y = jax.eval_shape(model, jax.ShapeDtypeStruct((2 * p,), self.X.dtype))
        except Exception as err:  # shape errors surface as TypeError/ValueError from jnp
            raise ValueError(f"model: does not accept the pair input of length 2p = {2 * p} ({err})") from None
        if y.shape != (p,):
            raise ValueError(f"model: outputs shape {y.shape}, but modular addition with p = {p} needs ({p},)")

    def loss_floor(self, model):
        return 0.0

    def as_regression(self) -> SampleRegression:
        """The same loss as a `SampleRegression` over the p² pairs (what the AGF engine takes)."""
        return SampleRegression(np.asarray(self.X), np.asarray(self.Y))
