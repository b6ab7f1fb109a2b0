// The deployment page: request rate, latency percentiles and the traffic split per
// version, drawn from the figures the server computed from the prediction log.
import { drawFigures } from "./figures.js";

drawFigures();
