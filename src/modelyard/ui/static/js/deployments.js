// The deployment page: request rate, latency percentiles, the traffic split and the
// error rate per version, drawn from the figures the server computed from the
// prediction log and its error records.
import { drawFigures } from "./figures.js";

drawFigures();
